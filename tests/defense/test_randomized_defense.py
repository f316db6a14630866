"""RandomizedDefense: the runner's decision as a differentiable Keras model; its EOT gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.ensemble import RandomizedEnsemble
from defense.randomization import resize_and_pad
from defense.randomized_defense import RandomizedDefense, equal_chunks
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

LABELS = np.array([1, 4, 7])
CONFIGS = [{}, {"per_image": True, "method": "bilinear"}, {"randomize": False}]


@pytest.fixture(scope="module")
def tiny_model():
    """A small two-headed classifier standing in for Inception-ResNet-v2."""
    return tiny_classifier(11, kernel=3, logits_stddev=1.0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


def seen(image, patterns, item, config):
    """Item `item` seen through its pattern, one image at a time."""
    if patterns.flip[item]:
        image = tf.reverse(image, [2])
    if not config.randomize:
        return image
    size, top, left = (int(field[item]) for field in patterns[:3])
    return resize_and_pad(image, size, top, left, out_size=config.out_size, method=config.method)


@pytest.mark.parametrize("changes", CONFIGS)
def test_its_labels_are_the_ensembles_for_the_same_seed(tiny_model, images, changes):
    config = TINY_DEFENSE.replace(**changes)
    defense = RandomizedDefense(tiny_model, config, seed=4)
    ensemble = RandomizedEnsemble(tiny_model, config, seed=4, chunk_size=5)
    scores = defense(images).numpy()
    summed = ensemble.scores(images)
    np.testing.assert_allclose(scores * config.num_iterations, summed, rtol=1e-5)
    np.testing.assert_array_equal(scores.argmax(axis=1), summed.argmax(axis=1))


def test_each_call_draws_fresh_patterns_at_inference(tiny_model, images):
    defense = RandomizedDefense(tiny_model, TINY_DEFENSE, num_iterations=1, seed=0)
    first, second = defense(images).numpy(), defense(images).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(
        first, RandomizedDefense(tiny_model, TINY_DEFENSE, num_iterations=1, seed=0)(images)
    )


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_output_and_gradient_are_the_mean_over_the_drawn_patterns(tiny_model, images, chunk_size):
    """Chunked (and recomputed in backpropagation) or not: the mean over single patterns."""
    defense = RandomizedDefense(
        tiny_model, TINY_DEFENSE, num_iterations=7, chunk_size=chunk_size, seed=2
    )
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        objective = tf.reduce_sum(defense(x)[:, 0])
    gradient = tape.gradient(objective, x).numpy()
    output = RandomizedDefense(
        tiny_model, TINY_DEFENSE, num_iterations=7, chunk_size=chunk_size, seed=2
    )(x)

    replay = RandomizedDefense(
        tiny_model, TINY_DEFENSE, num_iterations=7, chunk_size=chunk_size, seed=2
    )
    expected_output = np.zeros((3, 11))
    expected_gradient = np.zeros_like(images)
    for chunk in range(replay.num_chunks):
        patterns = replay.draw_patterns(3, replay.patterns_per_chunk)
        valid = min(replay.patterns_per_chunk, 7 - chunk * replay.patterns_per_chunk)
        for item in range(valid * 3):
            index = item % 3
            image = tf.constant(images[index : index + 1])
            with tf.GradientTape() as tape:
                tape.watch(image)
                outputs = tiny_model(seen(image, patterns, item, TINY_DEFENSE))
                score = tf.nn.softmax(outputs["logits"]) + 0.4 * tf.nn.softmax(
                    outputs["aux_logits"]
                )
                first_class = score[0, 0]
            expected_output[index] += score.numpy()[0]
            expected_gradient[index] += tape.gradient(first_class, image).numpy()[0]
    np.testing.assert_allclose(output.numpy(), expected_output / 7, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gradient, expected_gradient / 7, rtol=1e-4, atol=1e-7)


def _cross_entropy(logits, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def _margin(logits, labels):
    """A loss other than the cross-entropy: the highest other logit minus the label's."""
    own = tf.gather(logits, labels, batch_dims=1)
    return tf.reduce_max(logits, axis=-1) - own


@pytest.mark.parametrize(("changes", "chunk_size"), zip(CONFIGS, [None, 2, 4], strict=True))
@pytest.mark.parametrize("item_loss", [None, _margin])
def test_the_eot_estimate_is_the_mean_over_single_patterns(
    tiny_model, images, changes, chunk_size, item_loss
):
    config = TINY_DEFENSE.replace(**changes)
    defense = RandomizedDefense(tiny_model, config, chunk_size=chunk_size, seed=3)
    if item_loss is None:
        gradient, loss_of = defense.loss_gradient(images, LABELS, samples=5).numpy(), _cross_entropy
    else:
        estimate = defense.eot_estimate(images, LABELS, samples=5, item_loss=item_loss)
        gradient, loss_of = estimate.gradient.numpy(), item_loss
    replay = RandomizedDefense(tiny_model, config, chunk_size=chunk_size, seed=3)
    count, per_chunk = equal_chunks(5, chunk_size)
    expected, losses, scores = np.zeros_like(images), np.zeros(3), np.zeros((3, 11))
    for chunk in range(count):
        patterns = replay.draw_patterns(3, per_chunk)
        for item in range(min(per_chunk, 5 - chunk * per_chunk) * 3):
            index = item % 3
            image = tf.constant(images[index : index + 1])
            with tf.GradientTape() as tape:
                tape.watch(image)
                outputs = tiny_model(seen(image, patterns, item, config))
                label = tf.constant(LABELS[index : index + 1], tf.int64)
                loss = loss_of(outputs["logits"], label)
                loss += config.aux_weight * loss_of(outputs["aux_logits"], label)
            expected[index] += tape.gradient(loss, image).numpy()[0]
            losses[index] += loss.numpy()[0]
            score = tf.nn.softmax(outputs["logits"])
            scores[index] += (score + config.aux_weight * tf.nn.softmax(outputs["aux_logits"]))[0]
    np.testing.assert_allclose(gradient, expected / 5, rtol=1e-4, atol=1e-6)
    if item_loss is not None:
        np.testing.assert_allclose(estimate.losses.numpy(), losses / 5, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(estimate.scores.numpy(), scores / 5, rtol=1e-5, atol=1e-7)


def test_chunks_are_equal_and_cover_the_samples():
    assert equal_chunks(30, 8) == (4, 8)
    assert equal_chunks(30, 16) == (2, 15)
    assert equal_chunks(30, None) == (1, 30)


def test_flips_are_drawn_only_when_the_config_flips(tiny_model):
    flips = RandomizedDefense(tiny_model, TINY_DEFENSE, seed=1).draw_patterns(1, 400).flip.numpy()
    assert 0.4 < flips.mean() < 0.6
    still = RandomizedDefense(tiny_model, TINY_DEFENSE.replace(flip_probability=0.0), seed=1)
    assert not still.draw_patterns(1, 400).flip.numpy().any()


def test_log_scores_are_logits_of_the_same_decision(tiny_model, images):
    scores = RandomizedDefense(tiny_model, TINY_DEFENSE, seed=6)(images).numpy()
    logits = RandomizedDefense(tiny_model, TINY_DEFENSE, seed=6, output="log_scores")(
        images
    ).numpy()
    np.testing.assert_allclose(logits, np.log(scores), rtol=1e-5)


def test_it_compiles_with_xla_and_runs_in_keras_predict(tiny_model):
    defense = RandomizedDefense(
        tiny_model, TINY_DEFENSE.replace(per_image=True), chunk_size=3, seed=0
    )
    batch = np.random.default_rng(1).uniform(-1, 1, (4, 12, 12, 3)).astype(np.float32)
    compiled = tf.function(defense, jit_compile=True)
    assert compiled(batch).shape == (4, 11)
    assert isinstance(defense, keras.Model)
    assert defense.predict(np.concatenate([batch] * 5), batch_size=8, verbose=0).shape == (20, 11)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_iterations": 0}, "num_iterations must be >= 1"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"output": "probabilities"}, "output must be one of"),
    ],
)
def test_bad_arguments_are_refused(tiny_model, options, message):
    with pytest.raises(ValueError, match=message):
        RandomizedDefense(tiny_model, TINY_DEFENSE, **options)


def test_loss_gradient_needs_one_label_per_image(tiny_model, images):
    with pytest.raises(ValueError, match="one label per image"):
        RandomizedDefense(tiny_model, TINY_DEFENSE).loss_gradient(images, LABELS[:2])
