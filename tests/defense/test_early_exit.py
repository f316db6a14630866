"""Early exit gives the exhaustive run's labels, always, and saves patterns when it can.

The property is checked over seeds, batch sizes, chunk sizes and configs (the
challenge's, the paper's one pattern, per-image patterns, no aux head), float32
and bfloat16, on models with flat, spread and saturated scores, and on a model
whose every pattern votes one-hot for a class chosen by its flip: exact ties
(15 votes each of 30) and near ties are common there, and the lowest class index
must win them as in the exhaustive argmax.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.ensemble import ROUNDING_MARGIN, RandomizedEnsemble, decided
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

CONFIGS = {
    "challenge": TINY_DEFENSE.replace(num_iterations=30),
    "paper": TINY_DEFENSE.replace(num_iterations=1, flip_probability=0.0, aux_weight=0.0),
    "per_image": TINY_DEFENSE.replace(num_iterations=20, per_image=True),
    "no_aux": TINY_DEFENSE.replace(num_iterations=25, aux_weight=0.0),
}

# One image in chunks of a few patterns, chunks splitting iterations and spanning
# several, and one chunk for the whole batch.
BATCH_AND_CHUNK_SIZES = ((1, 4), (5, 7), (8, 32))


def build_under(precision, build):
    """`build()` under the Keras dtype policy of `precision`."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


class FlipVoter(keras.Model):
    """Votes one-hot (logit gap 2000) for class 1 when the image's left half is the
    brighter, else for class 0; with aux logits alike. Images bright on one side
    thus get one vote per pattern decided by its flip."""

    def call(self, images):
        width = tf.shape(images)[2]
        left = tf.reduce_mean(tf.cast(images[:, :, : width // 2], tf.float32), axis=[1, 2, 3])
        right = tf.reduce_mean(tf.cast(images[:, :, width // 2 :], tf.float32), axis=[1, 2, 3])
        vote = tf.sign(left - right) * 1000.0
        logits = tf.stack([-vote, vote, tf.zeros_like(vote) - 5000.0], axis=1)
        return {"logits": logits, "aux_logits": logits}


def half_bright(count, rng):
    """Images bright on the left half, dark on the right, with a little noise."""
    images = rng.uniform(-0.1, 0.1, (count, 12, 12, 3)).astype(np.float32)
    images[:, :, :6] += 0.8
    images[:, :, 6:] -= 0.8
    return images


def models(precision):
    """Flat, spread and saturated random classifiers, and the flip voter (float32 only:
    it computes in float32 whatever the policy); bfloat16's rounding shows in the spread
    and saturated ones."""
    stddevs = (0.3, 3.0, 30.0) if precision == "float32" else (3.0, 30.0)
    built = {
        f"stddev={stddev}": build_under(
            precision, lambda stddev=stddev: tiny_classifier(7, kernel=3, logits_stddev=stddev)
        )
        for stddev in stddevs
    }
    return built | {"flip_voter": FlipVoter()} if precision == "float32" else built


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_labels_equal_the_exhaustive_run(precision):
    rng = np.random.default_rng(0)
    saved = {}
    classifiers = models(precision)
    for (model_name, model), (config_name, config), (batch_size, chunk_size) in itertools.product(
        classifiers.items(), CONFIGS.items(), BATCH_AND_CHUNK_SIZES
    ):
        ensemble = RandomizedEnsemble(model, config, chunk_size=chunk_size)
        for seed in range(2):
            images = (
                half_bright(batch_size, rng)
                if model_name == "flip_voter"
                else rng.uniform(-1, 1, (batch_size, 12, 12, 3)).astype(np.float32)
            )
            ensemble.early_exit = False
            ensemble.generator.reset_from_seed(seed)
            exhaustive = ensemble.predict(images)
            ensemble.early_exit = True
            ensemble.generator.reset_from_seed(seed)
            labels, evaluated = ensemble.decide(images)
            case = f"{model_name}, {config_name}, seed {seed}, {batch_size}/{chunk_size}"
            np.testing.assert_array_equal(labels, exhaustive, err_msg=case)
            assert np.all((evaluated >= 1) & (evaluated <= config.num_iterations)), case
            key = (model_name, config_name)
            saved[key] = saved.get(key, 0) + config.num_iterations * batch_size - evaluated.sum()
    # Not vacuous: confident models stop early, the paper's one pattern never can.
    assert saved["stddev=30.0", "challenge"] > 0
    assert precision != "float32" or saved["flip_voter", "no_aux"] > 0
    assert all(saved[model, "paper"] == 0 for model in classifiers)


def test_the_counters_add_up_over_calls():
    model = tiny_classifier(7, kernel=3, logits_stddev=30.0)
    images = np.random.default_rng(4).uniform(-1, 1, (5, 12, 12, 3)).astype(np.float32)
    ensemble = RandomizedEnsemble(model, CONFIGS["challenge"], seed=0, chunk_size=8)
    first = ensemble.decide(images)[1]
    second = ensemble.decide(images[:2])[1]
    assert ensemble.patterns_evaluated == first.sum() + second.sum()
    assert ensemble.patterns_drawn == 30 * 7


def test_exact_ties_are_won_by_the_lowest_class_as_in_argmax():
    config = CONFIGS["challenge"].replace(per_image=True)
    images = half_bright(64, np.random.default_rng(1))
    early = RandomizedEnsemble(FlipVoter(), config, seed=5, chunk_size=16)
    exhaustive = RandomizedEnsemble(FlipVoter(), config, seed=5, chunk_size=16, early_exit=False)
    scores = exhaustive.scores(images)
    tied = scores[:, 0] == scores[:, 1]
    assert tied.any(), "some images get 15 flipped patterns of 30: a tie of classes 0 and 1"
    labels, evaluated = early.decide(images)
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=1))
    assert np.all(labels[tied] == 0)
    assert np.all(evaluated[tied] == 30), "a final tie is never decided early"


def test_early_exit_uses_the_same_patterns_and_sums():
    model = tiny_classifier(7, kernel=3, logits_stddev=30.0)
    config = CONFIGS["challenge"]
    images = np.random.default_rng(2).uniform(-1, 1, (6, 12, 12, 3)).astype(np.float32)
    early = RandomizedEnsemble(model, config, seed=9, chunk_size=4)
    exhaustive = RandomizedEnsemble(model, config, seed=9, chunk_size=4, early_exit=False)
    for a, b in zip(early.draw_patterns(6), exhaustive.draw_patterns(6), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    labels, evaluated = early.decide(images)
    assert evaluated.min() < config.num_iterations, "a confident model stops early"
    # The next batch continues the generator's stream exactly as the exhaustive run's.
    np.testing.assert_array_equal(early.predict(images), exhaustive.predict(images))
    np.testing.assert_array_equal(labels, np.argmax(exhaustive.scores(images), axis=1))


def test_scores_are_never_cut_short():
    model = tiny_classifier(7, kernel=3, logits_stddev=30.0)
    images = np.random.default_rng(3).uniform(-1, 1, (4, 12, 12, 3)).astype(np.float32)
    early = RandomizedEnsemble(model, CONFIGS["challenge"], seed=1)
    exhaustive = RandomizedEnsemble(model, CONFIGS["challenge"], seed=1, early_exit=False)
    np.testing.assert_array_equal(early.scores(images), exhaustive.scores(images))


def test_a_gap_equal_to_the_bound_is_undecided_whichever_class_leads():
    # Two more patterns can bring class 0 level with class 1, and a tie goes to class 0.
    assert not decided(np.array([[3.0, 5.0]]), np.array([2]), 1.0)[0]
    # Conservative the other way too: class 0 would win the tie, still undecided.
    assert not decided(np.array([[5.0, 3.0]]), np.array([2]), 1.0)[0]
    above = 2.0 + 2 * ROUNDING_MARGIN
    assert decided(np.array([[3.0 + above, 3.0], [3.0, 3.0 + above]]), np.array([2, 2]), 1.0).all()


def test_the_runner_up_is_any_other_class():
    total = np.array([[9.0, 1.0, 8.5, 0.0], [9.0, 1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(decided(total, np.array([1, 1]), 1.4), [False, True])
    np.testing.assert_array_equal(decided(total, np.array([0, 0]), 1.4), [True, True])


def test_one_class_is_always_decided():
    assert decided(np.array([[2.0], [0.0]]), np.array([5, 5]), 1.0).all()
