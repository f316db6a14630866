"""The foolbox adapter: the defense as a foolbox model with one fresh pattern per call,
and inside foolbox's ExpectationOverTransformationWrapper for EOT attacks.

The slow test runs foolbox's LinfPGD on the EOT-wrapped digits CNN and compares what
it leaves of the randomized defense with our EOT-PGD and with transferred plain PGD
(the references of `test_adapters_art`, at the same budget).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from tests.support.tiny_models import tiny_classifier

# Through the adapter, which lets foolbox import where no `git` binary is (the image).
adapter = pytest.importorskip("defense.adapters.foolbox")
foolbox, foolbox_eot_model, foolbox_model = (
    adapter.foolbox,
    adapter.foolbox_eot_model,
    adapter.foolbox_model,
)

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

TINY = DefenseConfig(
    name="tiny", low=12, high=16, out_size=16, num_iterations=8, flip_probability=0.5
)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_classifier(11, kernel=3)


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)), tf.float32)


def test_one_fresh_pattern_per_call(tiny_model, images):
    model = foolbox_model(tiny_model, TINY, image_size=12, seed=1)
    assert isinstance(model, foolbox.TensorFlowModel) and model.bounds == (-1, 1)
    first, second = model(images), model(images)
    assert first.shape == (3, 11)
    assert not np.allclose(first.numpy(), second.numpy())
    np.testing.assert_allclose(
        first.numpy(), foolbox_model(tiny_model, TINY, image_size=12, seed=1)(images)
    )


@pytest.mark.parametrize("bounds", [(0, 1), (0, 255)])
def test_bounds_map_onto_the_models_range_before_the_padding(tiny_model, images, bounds):
    low, high = bounds
    scaled = low + (images + 1) / 2 * (high - low)
    model = foolbox_model(tiny_model, TINY, bounds=bounds, image_size=12, seed=2)
    np.testing.assert_allclose(
        model(scaled).numpy(),
        foolbox_model(tiny_model, TINY, image_size=12, seed=2)(images).numpy(),
        atol=1e-5,
    )


def test_gradients_pass_through_the_pattern(tiny_model, images):
    model = foolbox_model(tiny_model, TINY, image_size=12, seed=0)
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(model(images)[:, 3])
    gradient = tape.gradient(loss, images).numpy()
    assert (np.abs(gradient).reshape(3, -1).max(axis=1) > 0).all()


def test_eot_model_averages_calls_with_fresh_patterns(tiny_model, images):
    eot = foolbox_eot_model(tiny_model, TINY, samples=5, image_size=12, seed=3)
    assert isinstance(eot, foolbox.models.ExpectationOverTransformationWrapper)
    single = foolbox_model(tiny_model, TINY, image_size=12, seed=3)
    expected = np.mean([single(images).numpy() for _ in range(5)], axis=0)
    np.testing.assert_allclose(eot(images).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("samples", [0, -2, 1.5])
def test_bad_sample_counts_are_refused(tiny_model, samples):
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        foolbox_eot_model(tiny_model, TINY, samples=samples)


@pytest.mark.parametrize("bounds", [(1, 0), (0, 0), (0, float("inf"))])
def test_bad_bounds_are_refused(tiny_model, bounds):
    with pytest.raises(ValueError, match="bounds must be finite"):
        foolbox_model(tiny_model, TINY, bounds=bounds)


@pytest.mark.parametrize(
    ("bounds", "scale", "message"),
    [
        ((-1, 1), lambda x: x * 127.5 + 127.5, r"values in \[-1, 1\], found .*\[0, 255\] pixels"),
        ((0, 1), lambda x: x * 127.5 + 127.5, r"values in \[0, 1\], found .*\[0, 255\] pixels"),
        ((0, 1), lambda x: x, r"inputs must hold values in \[0, 1\], found values in \[-0.99"),
        ((-1, 1), lambda x: tf.where(x > 0, np.nan, x), "inputs must be finite"),
        ((-1, 1), lambda x: tf.cast(x > 0, tf.int32), "inputs must hold floating-point values"),
    ],
)
def test_inputs_out_of_bounds_or_not_finite_are_refused(tiny_model, images, bounds, scale, message):
    model = foolbox_model(tiny_model, TINY, bounds=bounds, image_size=12)
    eot = foolbox_eot_model(tiny_model, TINY, samples=2, bounds=bounds, image_size=12)
    for call in (model, eot):
        with pytest.raises(ParameterError, match=message) as raised:
            call(scale(images))
        assert raised.value.parameters == ("inputs",)


@pytest.mark.parametrize(
    ("reshape", "message"),
    [
        (lambda x: tf.pad(x, [(0, 0), (0, 4), (0, 4), (0, 0)]), r"shape \[N, 12, 12, 3\], got"),
        (lambda x: tf.transpose(x, (0, 3, 1, 2)), "channels first"),
        (lambda x: x[..., :1], "one channel"),
    ],
)
def test_inputs_of_the_wrong_shape_are_refused(tiny_model, images, reshape, message):
    with pytest.raises(ParameterError, match=message):
        foolbox_model(tiny_model, TINY, image_size=12)(reshape(images))


def test_float64_inputs_are_accepted(tiny_model, images):
    expected = foolbox_model(tiny_model, TINY, image_size=12, seed=4)(images).numpy()
    model = foolbox_model(tiny_model, TINY, image_size=12, seed=4)
    np.testing.assert_allclose(model(tf.cast(images, tf.float64)).numpy(), expected, rtol=1e-6)


def test_image_size_must_give_the_models_input_size():
    fixed = tiny_classifier(11, kernel=3, input_size=16)
    foolbox_model(fixed, TINY, image_size=12)
    with pytest.raises(ParameterError, match="image_size=12 gives the model 12x12"):
        foolbox_model(fixed, TINY.replace(randomize=False), image_size=12)


@pytest.fixture(scope="module")
def foolbox_attacked(digits, tmp_path_factory):
    """foolbox's LinfPGD on the EOT-wrapped defense, with the references."""
    import keras

    from tests.defense.adapters.test_adapters_art import (
        BELOW_TRANSFER,
        EPSILON,
        IMAGES,
        SAMPLES,
        STEP_SIZE,
        STEPS,
        defended_accuracy,
        reference_accuracies,
    )
    from tests.support.digits import DEFENSE, INPUT_SIZE

    images, labels = digits.x_test[:IMAGES], digits.y_test[:IMAGES]
    model = foolbox_eot_model(digits.model, DEFENSE, samples=SAMPLES, image_size=INPUT_SIZE, seed=3)
    attack = foolbox.attacks.LinfPGD(abs_stepsize=STEP_SIZE * 2 / 255, steps=STEPS)
    keras.utils.set_random_seed(3)  # foolbox's random start draws from TensorFlow's global seed
    _, adversarial, _ = attack(
        model, tf.constant(images), tf.constant(labels), epsilons=EPSILON * 2 / 255
    )
    adversarial = adversarial.numpy()
    return {
        **reference_accuracies(digits, tmp_path_factory),
        "radius": EPSILON * 2 / 255,
        "below_transfer": BELOW_TRANSFER,
        "images": images,
        "adversarial": adversarial,
        "foolbox": defended_accuracy(digits.model, adversarial, labels),
    }


@pytest.mark.slow
def test_foolbox_eot_pgd_matches_our_eot_pgd_and_beats_transfer(foolbox_attacked):
    result = foolbox_attacked
    print(
        f"\ndefense accuracy: foolbox EOT LinfPGD {result['foolbox']:.0%}, our EOT-PGD "
        f"{result['ours']:.0%}, transferred PGD {result['transferred']:.0%}, "
        f"clean {result['clean']:.0%}"
    )
    assert np.abs(result["adversarial"] - result["images"]).max() <= result["radius"] + 1e-6
    assert abs(result["foolbox"] - result["ours"]) <= 0.10
    assert result["foolbox"] <= result["transferred"] - result["below_transfer"]


def test_the_adapter_imports_without_a_git_binary(tmp_path):
    """foolbox imports GitPython, which fails to import where `git` is missing (as in
    the container) unless GIT_PYTHON_REFRESH says otherwise; the adapter says so."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_PYTHON", "PATH"))}
    result = subprocess.run(
        [sys.executable, "-c", "import defense.adapters.foolbox"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment, "PATH": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
