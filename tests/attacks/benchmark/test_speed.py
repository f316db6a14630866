"""attacks.benchmark.speed: the batched-vs-looped comparisons time the same work both ways.

Speed itself is shown by the benchmark (`scripts/benchmark_defense.py --attacks`),
not asserted here: these tests check what is timed and what is reported.
"""

import numpy as np
import pytest
import tensorflow as tf

from attacks.apgd import eot_objective
from attacks.benchmark.speed import (
    SpeedComparison,
    compare_apgd_eot_step,
    compare_carlini_wagner,
    compare_deepfool,
    compare_eot_gradient,
    looped_apgd_eot_step,
    looped_eot_gradient,
    per_example,
)
from attacks.carlini_wagner import CarliniWagnerL2
from attacks.deepfool import DeepFool
from defense.common.errors import ParameterError
from defense.randomized_defense import RandomizedDefense
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

COUNT, CLASSES = 4, 10
DEEPFOOL = {"max_iter": 3}
CW = {"max_iterations": 5, "binary_search_steps": 1}


@pytest.fixture(scope="module")
def model():
    return tiny_classifier(CLASSES, kernel=3, logits_stddev=1.0)


@pytest.fixture(scope="module")
def logits_fn(model):
    return lambda images: model(images)["logits"]


@pytest.fixture(scope="module")
def images():
    return tf.constant(
        np.random.default_rng(0).uniform(-1, 1, (COUNT, 12, 12, 3)).astype(np.float32)
    )


@pytest.fixture(scope="module")
def labels():
    return np.array([1, 4, 7, 2])


def assert_timed(comparison: SpeedComparison, name: str, *counts: str) -> None:
    assert comparison.name == name
    assert comparison.batched_s > 0 and comparison.looped_s > 0
    assert comparison.ratio == comparison.looped_s / comparison.batched_s
    for count in counts:
        assert count in comparison.detail


def test_ratio_is_looped_over_batched():
    comparison = SpeedComparison("x", batched_s=0.5, looped_s=3.0, detail="")
    assert comparison.ratio == 6.0
    with pytest.raises(AttributeError):
        comparison.batched_s = 1.0  # frozen


def test_eot_comparison_times_the_k_pattern_gradient_against_k_single_ones(model, images, labels):
    defense = RandomizedDefense(model, TINY_DEFENSE, chunk_size=3, seed=0)
    comparison = compare_eot_gradient(defense, images, labels, samples=5, repeats=2)
    assert_timed(
        comparison,
        "EOT-PGD, K=5 patterns",
        "5 patterns x 4 images (2 chunk(s) of 3 patterns)",
        "vs 5 single-pattern gradients of 4 images",
        "best of 2",
    )
    batched = defense.loss_gradient(images, labels, samples=5).numpy()
    looped = looped_eot_gradient(defense, images, labels, 5).numpy()
    assert looped.shape == batched.shape == images.shape
    assert np.isfinite(looped).all() and np.isfinite(batched).all()
    assert np.abs(looped).max() > 0
    # Different random patterns: two estimates of one expectation, not one number.
    assert not np.allclose(looped, batched)


def test_the_looped_eot_gradient_is_the_mean_of_single_pattern_gradients(model, images, labels):
    """Without randomness every pattern is the identity: both estimates are the one gradient."""
    config = TINY_DEFENSE.replace(randomize=False, flip_probability=0.0)
    defense = RandomizedDefense(model, config, seed=0)
    single = defense.loss_gradient(images, labels, samples=1).numpy()
    np.testing.assert_allclose(looped_eot_gradient(defense, images, labels, 4), single, atol=1e-7)
    np.testing.assert_allclose(defense.loss_gradient(images, labels, samples=4), single, atol=1e-7)


def test_apgd_eot_comparison_times_a_k_sample_step_against_k_single_sample_ones(
    model, images, labels
):
    defense = RandomizedDefense(model, TINY_DEFENSE, chunk_size=4, seed=0)
    comparison = compare_apgd_eot_step(defense, images, labels, samples=6, repeats=1)
    assert_timed(
        comparison,
        "APGD-EOT step, 6 samples",
        "one step of 6 samples x 4 images (2 chunk(s) of 3 patterns)",
        "vs 6 single-sample steps of 4 images",
        "best of 1",
    )
    assert comparison.ratio > 0


def test_the_looped_apgd_eot_step_sums_single_sample_objectives(model, images, labels):
    """Without randomness each sample is the one gradient: the loop sums `samples` of it."""
    config = TINY_DEFENSE.replace(randomize=False, flip_probability=0.0)
    defense = RandomizedDefense(model, config, seed=0)
    single = eot_objective(defense, 1, dlr=False, targeted=False)(images, labels)[1].numpy()
    assert np.abs(single).max() > 0
    looped = looped_apgd_eot_step(defense, images, labels, 3).numpy()
    np.testing.assert_allclose(looped, 3 * single, rtol=1e-5, atol=1e-7)


def test_deepfool_comparison_loops_the_same_attack(logits_fn, images):
    comparison = compare_deepfool(logits_fn, images, **DEEPFOOL)
    assert_timed(
        comparison, "DeepFool, batch of 4", "on 4 images vs 4 runs on 1 image", "max_iter=3"
    )
    attack = DeepFool(**DEEPFOOL)
    expected = attack(logits_fn, images).numpy()
    assert not np.allclose(expected, images)
    # Per example, DeepFool is the same attack: the loop does the batch's work.
    looped = per_example(lambda batch: attack(logits_fn, batch), images)
    np.testing.assert_allclose(looped, expected, atol=1e-5)


def test_carlini_wagner_comparison_loops_the_same_attack(logits_fn, images, labels):
    comparison = compare_carlini_wagner(logits_fn, images, labels, **CW)
    assert_timed(
        comparison,
        "C&W L2, batch of 4",
        "on 4 images vs 4 runs on 1 image",
        "max_iterations=5, binary_search_steps=1",
    )
    attack = CarliniWagnerL2(**CW, initial_const=10.0)
    expected = attack(logits_fn, images, labels).numpy()
    assert not np.allclose(expected, images)
    looped = per_example(lambda x, y: attack(logits_fn, x, y), images, labels)
    np.testing.assert_allclose(looped, expected, atol=1e-5)


def test_bad_arguments_fail_before_timing(logits_fn, images, labels, model):
    with pytest.raises(ParameterError, match="one label per image"):
        compare_carlini_wagner(logits_fn, images, labels[:3], **CW)
    with pytest.raises(ParameterError, match="nb_candidate"):
        compare_deepfool(logits_fn, images, nb_candidate=CLASSES + 1)
    with pytest.raises(ParameterError, match="samples"):
        compare_eot_gradient(RandomizedDefense(model, TINY_DEFENSE), images, labels, samples=0)
    with pytest.raises(ParameterError, match="samples"):
        compare_apgd_eot_step(RandomizedDefense(model, TINY_DEFENSE), images, labels, samples=0)
    with pytest.raises(ValueError, match="non-empty"):
        compare_deepfool(logits_fn, images[:0])
