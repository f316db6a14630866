"""The ART adapter: the randomization as ART preprocessing defences, one pattern or EoT.

Fast tests check the preprocessors against the defense's own pattern draw on a tiny
model; the slow ones run ART's ProjectedGradientDescent through the EoT preprocessor
on the trained digits CNN and compare what it leaves of the randomized defense with
our EOT-PGD and with plain PGD transferred from the undefended model, and ART's
AutoProjectedGradientDescent with our APGD-CE with EOT. This file
also holds the reference attacks the foolbox test compares with (`_our_eot_pgd`,
`_transferred_pgd`, `reference_accuracies`), so an API change of `attacks` is
followed in one place.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.patterns import apply_patterns, draw_patterns, make_generator
from tests.support.run_once import run_once
from tests.support.tiny_models import tiny_classifier

art = pytest.importorskip("art")
from defense.adapters.art import (  # noqa: E402
    EoTRandomizationPreprocessor,
    MeanOverPatterns,
    RandomizationPreprocessor,
    art_classifier,
)

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

TINY = DefenseConfig(
    name="tiny", low=12, high=16, out_size=16, num_iterations=8, flip_probability=0.5
)
LABELS = np.array([1, 4, 7])


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_classifier(11, kernel=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


def expected_items(images, config, seed, samples):
    """Image i through its patterns, drawn as the defense draws them, ART's image-major order."""
    patterns = draw_patterns(make_generator(seed), config, len(images), samples)
    items = np.tile(images, [samples, 1, 1, 1])
    seen = apply_patterns(items, patterns, out_size=config.out_size, method=config.method)
    return np.swapaxes(seen.numpy().reshape(samples, len(images), *seen.shape[1:]), 0, 1)


@pytest.mark.parametrize("changes", [{}, {"per_image": True, "method": "bilinear"}])
def test_one_pattern_preprocessor_draws_as_the_defense(images, changes):
    config = TINY.replace(**changes)
    preprocessor = RandomizationPreprocessor(config, seed=4)
    assert (preprocessor.apply_fit, preprocessor.apply_predict) == (False, True)
    seen, labels = preprocessor.forward(tf.constant(images), LABELS)
    assert seen.shape == (3, 16, 16, 3) and labels is LABELS
    np.testing.assert_allclose(seen.numpy(), expected_items(images, config, 4, 1)[:, 0])
    again, _ = preprocessor(images)
    assert not np.array_equal(again, seen.numpy()), "every call draws fresh patterns"


@pytest.mark.parametrize("per_image", [False, True])
def test_eot_preprocessor_returns_samples_per_image_with_labels_repeated(images, per_image):
    config = TINY.replace(per_image=per_image)
    preprocessor = EoTRandomizationPreprocessor(config, samples=5, seed=7)
    one_hot = np.eye(11, dtype=np.float32)[LABELS]
    seen, labels = preprocessor.forward(tf.constant(images), tf.constant(one_hot))
    assert seen.shape == (15, 16, 16, 3) and labels.shape == (15, 11)
    np.testing.assert_array_equal(np.argmax(labels, axis=1), np.repeat(LABELS, 5))
    expected = expected_items(images, config, 7, 5).reshape(15, 16, 16, 3)
    np.testing.assert_allclose(seen.numpy(), expected)
    assert preprocessor.forward(tf.constant(images))[1] is None


def test_without_randomization_only_the_flip_is_applied(images):
    flipped, _ = RandomizationPreprocessor(TINY.replace(randomize=False, flip_probability=1.0))(
        images
    )
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    still, _ = EoTRandomizationPreprocessor(
        TINY.replace(randomize=False, flip_probability=0.0), samples=2
    )(images)
    np.testing.assert_array_equal(still, np.repeat(images, 2, axis=0))


@pytest.mark.parametrize("samples", [1, 4])
def test_classifier_gradients_pass_through_the_patterns(tiny_model, images, samples):
    classifier = art_classifier(tiny_model, TINY, samples=samples, image_size=12, seed=0)
    assert classifier.nb_classes == 11 and classifier.input_shape == (12, 12, 3)
    assert tuple(classifier.clip_values) == (-1, 1)
    gradient = classifier.loss_gradient(images, np.eye(11, dtype=np.float32)[LABELS])
    assert gradient.shape == images.shape
    assert (np.abs(gradient).reshape(3, -1).max(axis=1) > 0).all()


def test_eot_predictions_are_one_row_per_image(tiny_model, images):
    classifier = art_classifier(tiny_model, TINY, samples=6, image_size=12, seed=0)
    assert classifier.predict(images).shape == (3, 11)
    rows = np.log([[[0.5, 0.5], [1.0, 1e-30]], [[0.2, 0.8], [0.2, 0.8]]])
    np.testing.assert_allclose(
        np.exp(MeanOverPatterns(2)(rows.reshape(4, 2))), [[0.75, 0.25], [0.2, 0.8]], atol=1e-6
    )


@pytest.mark.parametrize("samples", [1, 4])
def test_the_loss_is_one_eot_loss_per_image(tiny_model, images, samples):
    def loss(reduction):
        classifier = art_classifier(tiny_model, TINY, samples=samples, image_size=12, seed=8)
        return classifier.compute_loss(images, LABELS, reduction=reduction)

    items = expected_items(images, TINY, 8, samples).reshape(-1, 16, 16, 3)
    rows = tf.nn.sparse_softmax_cross_entropy_with_logits(
        np.repeat(LABELS, samples), tiny_model(items)["logits"]
    )
    expected = rows.numpy().reshape(3, samples).mean(axis=1)
    np.testing.assert_allclose(loss("none"), expected, rtol=1e-5)
    np.testing.assert_allclose(loss("mean"), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss("sum"), expected.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="reduction must be 'none', 'mean' or 'sum'"):
        loss("max")


@pytest.mark.parametrize("samples", [0, -1, 2.0])
def test_bad_sample_counts_are_refused(tiny_model, samples):
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        art_classifier(tiny_model, TINY, samples=samples, image_size=12)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        EoTRandomizationPreprocessor(TINY, samples=samples)


def test_image_size_must_give_the_models_input_size():
    fixed = tiny_classifier(11, kernel=3, input_size=16)
    art_classifier(fixed, TINY, image_size=12)
    with pytest.raises(ValueError, match="image_size=12 gives the model 12x12"):
        art_classifier(fixed, TINY.replace(randomize=False), image_size=12)


def test_a_model_without_a_logits_output_is_refused():
    inputs = keras.Input((None, None, 3))
    plain = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    with pytest.raises(ValueError, match="'logits' output"):
        art_classifier(plain, TINY, image_size=12)


@pytest.fixture
def classifier(tiny_model):
    return art_classifier(tiny_model, TINY, image_size=12, seed=0)


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (
            lambda x: x * 127.5 + 127.5,
            r"x must hold values in \[-1, 1\], found .*\[0, 255\] pixels",
        ),
        (lambda x: x * 1.5, r"x must hold values in \[-1, 1\], found values in \[-1.49"),
        (lambda x: np.where(x > 0, np.nan, x), r"x must be finite, found \d+ NaN or infinite"),
        (lambda x: np.where(x > 0, np.inf, x), "x must be finite"),
        (lambda x: (x > 0).astype(np.uint8), "x must hold floating-point values"),
    ],
)
def test_images_out_of_range_or_not_finite_are_refused(classifier, images, scale, message):
    for call in (classifier.predict, lambda x: classifier.loss_gradient(x, LABELS)):
        with pytest.raises(ParameterError, match=message) as raised:
            call(scale(images))
        assert raised.value.parameters == ("x",)


def test_float_rounding_past_the_range_is_accepted(classifier, images):
    assert classifier.predict(np.clip(images * 1.0005, -1.0005, 1.0005)).shape == (3, 11)


@pytest.mark.parametrize(
    ("reshape", "message"),
    [
        (lambda x: np.pad(x, [(0, 0), (0, 4), (0, 4), (0, 0)]), r"shape \[N, 12, 12, 3\], got"),
        (lambda x: np.transpose(x, (0, 3, 1, 2)), "channels first"),
        (lambda x: x[..., :1], "one channel"),
        (lambda x: x[0], r"got shape \(12, 12, 3\)"),
        (lambda x: x[:0], "at least one image"),
    ],
)
def test_images_of_the_wrong_shape_are_refused(classifier, images, reshape, message):
    with pytest.raises(ParameterError, match=message):
        classifier.predict(reshape(images))
    with pytest.raises(ParameterError, match=message):
        classifier.loss_gradient(reshape(images), LABELS[: len(reshape(images))])


@pytest.mark.parametrize("samples", [1, 3])
def test_float64_images_are_accepted(tiny_model, images, samples):
    def run(x):
        classifier = art_classifier(tiny_model, TINY, samples=samples, image_size=12, seed=5)
        return classifier.predict(x), classifier.loss_gradient(x, LABELS)

    (predictions, gradient), (predictions64, gradient64) = run(images), run(images.astype(float))
    np.testing.assert_allclose(predictions64, predictions, rtol=1e-6)
    np.testing.assert_allclose(gradient64, gradient, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("labels", [LABELS, LABELS.astype(np.float32), list(LABELS)])
def test_index_labels_give_the_one_hot_gradient(tiny_model, images, samples, labels):
    def gradient(y):
        classifier = art_classifier(tiny_model, TINY, samples=samples, image_size=12, seed=6)
        return classifier.loss_gradient(images, y)

    np.testing.assert_allclose(gradient(labels), gradient(np.eye(11)[LABELS]), rtol=1e-6)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([1.5, 4, 7], r"y must be whole-number labels, found 1.5"),
        ([1, 4, 11], r"y must be labels in \[0, 10\], found 11"),
        ([-1, 4, 7], r"y must be labels in \[0, 10\], found -1"),
        ([1, 4], r"index labels of shape \[3\] or one-hot labels of shape \[3, 11\]"),
        (np.eye(10)[[1, 4, 7]], r"got shape \(3, 10\)"),
        (np.full((3, 11), np.nan), "y must be finite"),
        (["a", "b", "c"], "y must hold numbers"),
    ],
)
def test_bad_labels_are_refused(classifier, images, labels, message):
    with pytest.raises(ParameterError, match=message) as raised:
        classifier.loss_gradient(images, np.asarray(labels))
    assert raised.value.parameters == ("y",)


def test_importing_the_adapters_imports_no_library():
    code = (
        "import sys, defense.adapters; "
        "loaded = {'tensorflow', 'art', 'foolbox', 'robustml', 'eagerpy'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# The digits CNN behind the defense scaled to 32 -> 36 (30 patterns, no flip), 100 test
# images, attacked at 20 pixel units in 10 steps of 5 with 5 patterns per EOT gradient.
# Measured (defense accuracy, seeds 1/3/5): our EOT-PGD 13-16%, ART's PGD through the EoT
# preprocessor 14-17%, foolbox's EOT LinfPGD 14-15%, transferred plain PGD 27-29%, clean
# 100%. The CNN is trained under the defense's own rescaling, so the randomization buys
# little against transfer at any budget (8 units: 75% EOT against 80%; 16: 34 against
# 40; 24: 2 against 10); 20 units leave the widest gap.
EPSILON, STEP_SIZE, STEPS, SAMPLES, IMAGES = 20, 5.0, 10, 5, 100
# How far below transferred PGD an adaptive attack must leave the defense.
BELOW_TRANSFER = 0.05


def _our_eot_pgd(model, images, labels, *, config, seed):
    """Our EOT-PGD (attacks.eot) at the shared budget: the reference of the adapter tests."""
    from attacks.eot import EOTPGD
    from defense.randomized_defense import RandomizedDefense

    attack = EOTPGD(epsilon=EPSILON, step_size=STEP_SIZE, steps=STEPS, samples=SAMPLES)
    return attack(RandomizedDefense(model, config, seed=seed), images, labels).numpy()


def _transferred_pgd(model, images, labels, *, seed):
    """Plain PGD on the undefended 32x32 model at the shared budget (transferred)."""
    from attacks.evaluation.scenarios import build_scenario, target_model
    from attacks.pgd import PGD
    from tests.support.digits import INPUT_SIZE, OUT_SIZE

    keras.utils.set_random_seed(seed)
    vanilla = target_model(
        model, build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    )
    attack = PGD(epsilon=EPSILON, step_size=STEP_SIZE, steps=STEPS)
    return attack(vanilla.logits, images, labels).numpy()


def defended_accuracy(model, candidates, labels):
    """Accuracy of the randomized defense (30 patterns, seed 2) on `candidates`."""
    from tests.support.digits import DEFENSE

    return float(np.mean(RandomizedEnsemble(model, DEFENSE, seed=2).predict(candidates) == labels))


def reference_accuracies(digits, tmp_path_factory) -> dict[str, float]:
    """Defended accuracy on the first `IMAGES` test images: clean, after our EOT-PGD and
    after transferred PGD; computed once per run (the foolbox test reuses it)."""

    def accuracies() -> dict[str, np.ndarray]:
        from tests.support.digits import DEFENSE

        images, labels = digits.x_test[:IMAGES], digits.y_test[:IMAGES]
        ours = _our_eot_pgd(digits.model, images, labels, config=DEFENSE, seed=1)
        transferred = _transferred_pgd(digits.model, images, labels, seed=1)
        return {
            "clean": np.float64(defended_accuracy(digits.model, images, labels)),
            "ours": np.float64(defended_accuracy(digits.model, ours, labels)),
            "transferred": np.float64(defended_accuracy(digits.model, transferred, labels)),
        }

    found = run_once(tmp_path_factory, "eot_references", accuracies)
    return {name: float(value) for name, value in found.items()}


@pytest.fixture(scope="module")
def art_attacked(digits, tmp_path_factory):
    """ART's L-inf PGD through the EoT preprocessor, with the references."""
    from art.attacks.evasion import ProjectedGradientDescent

    from tests.support.digits import DEFENSE, INPUT_SIZE

    images, labels = digits.x_test[:IMAGES], digits.y_test[:IMAGES]
    classifier = art_classifier(
        digits.model, DEFENSE, samples=SAMPLES, image_size=INPUT_SIZE, seed=3
    )
    attack = ProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=EPSILON * 2 / 255,
        eps_step=STEP_SIZE * 2 / 255,
        max_iter=STEPS,
        num_random_init=1,
        batch_size=IMAGES,
        verbose=False,
    )
    adversarial = attack.generate(images, labels)
    return {
        **reference_accuracies(digits, tmp_path_factory),
        "images": images,
        "adversarial": adversarial,
        "art": defended_accuracy(digits.model, adversarial, labels),
    }


# One slow test per file: pytest-xdist may run a module's tests on different workers,
# each building the module fixture again.
@pytest.mark.slow
def test_art_eot_pgd_matches_our_eot_pgd_and_beats_transfer(art_attacked):
    result = art_attacked
    print(
        f"\ndefense accuracy at {EPSILON} pixel units: ART EoT-PGD {result['art']:.0%}, "
        f"our EOT-PGD {result['ours']:.0%}, transferred PGD {result['transferred']:.0%}, "
        f"clean {result['clean']:.0%}"
    )
    perturbation = result["adversarial"] - result["images"]
    assert np.abs(perturbation).max() <= EPSILON * 2 / 255 + 1e-6
    assert np.abs(result["adversarial"]).max() <= 1.0
    assert result["clean"] >= 0.9
    assert abs(result["art"] - result["ours"]) <= 0.10
    for name in ("art", "ours"):
        assert result[name] <= result["transferred"] - BELOW_TRANSFER, name


# ART's AutoProjectedGradientDescent through the EoT preprocessor against our APGD-CE with
# EOT: 50 test images, 20 pixel units, 5 iterations of 5 patterns per gradient, judged by
# 2 redraws of the 30-pattern defense. Measured (defense accuracy, seeds 1..6 of both
# attacks): ART 12-20%, ours 11-14%, clean 100%; at 16 pixel units (40-49% against
# 36-45%) one seed in six put them 11 points apart. ART runs behind because it returns
# an image's random start unless its last one-draw EoT prediction finds the iterate
# fooled (about 20 of 50 images at 16 units), where ours returns the highest-loss point.
APGD_IMAGES, APGD_ITERATIONS, REDRAWS = 50, 5, 2


@pytest.mark.slow
def test_art_apgd_through_eot_matches_our_apgd_eot(digits):
    from art.attacks.evasion import AutoProjectedGradientDescent

    from attacks import APGD
    from attacks.robustness.judgement import redraw_accuracy
    from defense.randomized_defense import RandomizedDefense
    from tests.support.digits import DEFENSE, INPUT_SIZE

    images, labels = digits.x_test[:APGD_IMAGES], digits.y_test[:APGD_IMAGES]
    classifier = art_classifier(
        digits.model, DEFENSE, samples=SAMPLES, image_size=INPUT_SIZE, seed=3
    )
    epsilon = EPSILON * 2 / 255
    # loss_type=None keeps the classifier and its own loss, the cross-entropy;
    # "cross_entropy" rebuilds a plain TensorFlowV2Classifier whose compute_loss has one
    # row per pattern, and ART's APGD fails indexing N images with N x samples losses.
    art_apgd = AutoProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=epsilon,
        eps_step=2 * epsilon,  # the first step of Croce & Hein's APGD, as ours
        max_iter=APGD_ITERATIONS,
        nb_random_init=1,
        batch_size=APGD_IMAGES,
        loss_type=None,
        verbose=False,
    )
    np.random.seed(3)  # ART draws its random start from NumPy's global generator
    ours = APGD(epsilon=EPSILON, n_iter=APGD_ITERATIONS, samples=SAMPLES, dlr=False)
    adversarials = {
        "art": art_apgd.generate(images, labels),
        "ours": ours(RandomizedDefense(digits.model, DEFENSE, seed=1), images, labels).numpy(),
    }
    judged = {
        name: redraw_accuracy(
            digits.model, DEFENSE, candidates, labels, redraws=REDRAWS, seed=2, chunk_size=256
        ).summary()
        for name, candidates in {"clean": images, **adversarials}.items()
    }
    print(
        f"\ndefense accuracy (mean, any-fooled) over {REDRAWS} redraws, {APGD_IMAGES} images, "
        f"{EPSILON} pixel units, {APGD_ITERATIONS} iterations of {SAMPLES} samples: "
        + ", ".join(f"{name} {got.mean:.0%} {got.any_fooled:.0%}" for name, got in judged.items())
    )
    accuracy = {name: got.mean for name, got in judged.items()}
    for candidates in adversarials.values():
        assert np.abs(candidates - images).max() <= epsilon + 1e-6
    assert accuracy["clean"] >= 0.9
    assert abs(accuracy["art"] - accuracy["ours"]) <= 0.10
    for name in adversarials:
        assert accuracy[name] <= accuracy["clean"] - 0.5, name
