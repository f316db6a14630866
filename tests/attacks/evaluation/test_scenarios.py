"""The paper's attack scenarios: their patterns, and target models that see images through them."""

import numpy as np
import pytest
import tensorflow as tf

from attacks.evaluation.scenarios import (
    SCENARIOS,
    Pattern,
    build_scenario,
    fixed_defense_model,
    target_model,
)
from tests.support.tiny_models import tiny_classifier


def test_ensemble_pattern_is_the_papers_21_patterns():
    scenario = build_scenario("ensemble_pattern")
    patterns = scenario.target_patterns
    assert len(patterns) == 21 and len(set(patterns)) == 21
    assert sorted({p.size for p in patterns}) == [299, 307, 315, 323, 331]
    for size in (299, 307, 315, 323):
        span = 331 - size
        places = {(p.top, p.left) for p in patterns if p.size == size}
        assert places == {(0, 0), (0, span), (span, 0), (span, span), (span // 2, span // 2)}
    assert Pattern(331, 0, 0) in patterns and scenario.randomized_defense


def test_single_pattern_pads_16_pixels_on_every_side():
    scenario = build_scenario("single_pattern")
    assert scenario.target_patterns == (Pattern(299, 16, 16),)
    assert (scenario.input_size, scenario.out_size) == (299, 331)


def test_vanilla_is_the_plain_model():
    scenario = build_scenario("vanilla")
    assert scenario.target_patterns is None and scenario.randomized_defense


def test_one_pixel_diagnostics_use_330_pixel_inputs():
    padding = build_scenario("one_pixel_padding")
    assert padding.input_size == 330
    assert padding.target_patterns == (Pattern(330, 0, 0), Pattern(330, 0, 1), Pattern(330, 1, 0))
    assert padding.defense_patterns == (Pattern(330, 1, 1),)
    resizing = build_scenario("one_pixel_resizing")
    assert resizing.input_size == 330 and resizing.target_patterns is None
    assert resizing.defense_patterns == (Pattern(331, 0, 0),)


def test_scenarios_scale_to_small_models():
    scenario = build_scenario("ensemble_pattern", input_size=32, out_size=36)
    assert sorted({p.size for p in scenario.target_patterns}) == [32, 33, 34, 35, 36]
    assert build_scenario("single_pattern", input_size=32, out_size=36).target_patterns == (
        Pattern(32, 2, 2),
    )


def test_bad_scenarios_are_refused():
    with pytest.raises(ValueError, match="known scenarios: " + ", ".join(SCENARIOS)):
        build_scenario("double_pattern")
    with pytest.raises(ValueError, match="input_size < out_size"):
        build_scenario("vanilla", input_size=331, out_size=331)
    with pytest.raises(ValueError, match="randomized defense"):
        fixed_defense_model(None, build_scenario("vanilla"))


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_classifier(5, kernel=3, strides=2, filters=4, aux=False)


def test_pattern_logits_equal_one_forward_pass_per_pattern(tiny_model):
    images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    scenario = build_scenario("ensemble_pattern", input_size=32, out_size=36)
    target = target_model(tiny_model, scenario)
    batched = target.pattern_logits(images).numpy()
    assert batched.shape == (20, 3, 5) and target.num_patterns == 20
    for k, pattern in enumerate(scenario.target_patterns):
        resized = tf.raw_ops.ResizeNearestNeighbor(
            images=images, size=[pattern.size] * 2, align_corners=False, half_pixel_centers=False
        )
        bottom, right = (36 - pattern.size - pattern.top, 36 - pattern.size - pattern.left)
        padded = tf.pad(resized, [[0, 0], [pattern.top, bottom], [pattern.left, right], [0, 0]])
        expected = tiny_model(padded)["logits"].numpy()
        np.testing.assert_allclose(batched[k], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(target.logits(images), batched.mean(axis=0), rtol=1e-6)
    labels = batched[0].argmax(axis=1)
    expected_counts = (batched.argmax(axis=2) == labels[None]).sum(axis=0)
    np.testing.assert_array_equal(target.correct_patterns(images, labels), expected_counts)
