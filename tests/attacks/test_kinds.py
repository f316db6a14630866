"""The attack base class (attacks.kinds.Attack): the checks, the target rules and the bounds
every attack gets from its one `__call__`, and how success is judged."""

import numpy as np
import pytest
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.carlini_wagner import CarliniWagnerL2
from attacks.deepfool import DeepFool
from attacks.eot import EOTPGD
from attacks.fgsm import FGSM
from attacks.kinds import (
    FixedBudgetAttack,
    MinimalPerturbationAttack,
    predictions,
    succeeded,
)
from attacks.pgd import PGD
from defense.common.errors import ParameterError
from defense.randomized_defense import RandomizedDefense
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

pytestmark = pytest.mark.xdist_group(__name__)


def channel_logits(images):
    """Three classes: the mean of each colour channel (a model with a known decision)."""
    return tf.reduce_mean(images, axis=[1, 2])


class Wild(FixedBudgetAttack):
    """A fixed-budget attack whose result leaves both its ball and the image range."""

    def __init__(self, *, epsilon: float = 4.0) -> None:
        self.epsilon = epsilon

    def run(self, target, images, labels, *, targeted):
        return images + tf.sign(tf.random.stateless_normal(images.shape, [0, 1]))


class Outside(MinimalPerturbationAttack):
    """A minimal-perturbation attack whose result leaves the image range."""

    def run(self, target, images, labels, *, targeted):
        return images * 3.0


@pytest.fixture(scope="module")
def model():
    return tiny_classifier(5, kernel=3)


@pytest.fixture(scope="module")
def logits(model):
    return lambda images: model(images)["logits"]


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


LABELS = np.array([1, 2, 0])  # classes of both the 3- and the 5-class model


def refused(parameter, match, call, *args, **kwargs):
    """`call` raises a ParameterError naming `parameter` and matching `match`."""
    with pytest.raises(ParameterError, match=match) as error:
        call(*args, **kwargs)
    assert error.value.parameters == (parameter,)


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: x[0], r"non-empty NHWC batch, got shape \(12, 12, 3\)"),
        (lambda x: x[:0], "non-empty NHWC batch"),
        (lambda x: x * 2, r"must lie in model input range \[-1.0, 1.0\]"),
        (lambda x: ((x + 1) * 127.5).astype(np.uint8), "must be floats .* got uint8"),
        (lambda x: np.where(x > 0.5, np.nan, x), "must lie in model input range"),
    ],
)
def test_images_outside_the_model_input_convention_are_refused(images, bad, match):
    refused("images", match, FGSM(), channel_logits, bad(images), LABELS)


def test_a_rounding_error_past_the_range_is_tolerated(images):
    images[0, 0, 0] = [CLIP_MAX + 1e-6, CLIP_MIN - 1e-6, 0.0]
    FGSM()(channel_logits, images.astype(np.float64), LABELS)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (LABELS[:2], r"one label per image, as integers; got int64 \(2,\)"),
        (LABELS.astype(np.float32), "one label per image, as integers; got float32"),
        (LABELS[None], "one label per image"),
    ],
)
def test_labels_must_be_one_integer_per_image(images, labels, match):
    for attack in (FGSM(), CarliniWagnerL2(max_iterations=1), DeepFool()):
        refused("labels", match, attack, channel_logits, images, labels)


def test_only_an_attack_that_does_not_use_labels_may_go_without(images, logits):
    refused("labels", "PGD needs labels", PGD(steps=1), channel_logits, images)
    with_labels = DeepFool(nb_candidate=2, max_iter=2)(logits, images, LABELS)
    without = DeepFool(nb_candidate=2, max_iter=2)(logits, images)
    np.testing.assert_array_equal(with_labels, without)


def test_deepfool_cannot_be_targeted(images):
    refused(
        "targeted",
        "DeepFool is untargeted; targeted does not apply",
        DeepFool(),
        channel_logits,
        images,
        LABELS,
        targeted=True,
    )


# ---------------------------------------------------------------- targets


def test_eot_pgd_refuses_any_target_but_the_randomized_defense(images, logits):
    refused(
        "target",
        "EOTPGD attacks the randomized defense: target must be a defense.RandomizedDefense",
        EOTPGD(steps=1, samples=1),
        logits,
        images,
        LABELS,
    )


def test_logits_attacks_take_the_defense_only_as_log_scores(model, images):
    scores = RandomizedDefense(model, TINY_DEFENSE, seed=0)
    refused("target", "make it with output='log_scores'", FGSM(), scores, images, LABELS)
    log_scores = RandomizedDefense(model, TINY_DEFENSE, output="log_scores", seed=0)
    adversarial = FGSM(epsilon=4)(log_scores, images, LABELS).numpy()
    assert np.abs(adversarial - images).max() <= pixels_to_model(4) + 1e-6


def test_a_target_must_be_callable(images):
    refused("target", "target must be a logits function", FGSM(), "model", images, LABELS)


# ---------------------------------------------------------------- bounds


def fixed_budget_runs(model, logits):
    """Every fixed-budget attack of the catalog at epsilon 6, with its target."""
    defense = RandomizedDefense(model, TINY_DEFENSE, seed=1)
    return [
        (FGSM(epsilon=6), logits),
        (PGD(epsilon=6, steps=3), logits),
        (EOTPGD(epsilon=6, steps=2, samples=2), defense),
        (Wild(epsilon=6), logits),
    ]


@pytest.mark.parametrize("targeted", [False, True])
def test_every_fixed_budget_result_is_in_its_ball_and_the_image_range(
    model, logits, images, targeted
):
    for attack, target in fixed_budget_runs(model, logits):
        adversarial = attack(target, images, LABELS, targeted=targeted).numpy()
        assert adversarial.dtype == np.float32 and adversarial.shape == images.shape
        assert np.abs(adversarial - images).max() <= pixels_to_model(6) + 1e-6, attack
        assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX, attack
        assert np.abs(adversarial - images).max() > pixels_to_model(3), attack


def test_clip_false_keeps_the_ball_but_not_the_image_range(images):
    raw = Wild(epsilon=6)(channel_logits, images, LABELS, clip=False).numpy()
    np.testing.assert_allclose(np.abs(raw - images), pixels_to_model(6), rtol=1e-5)
    assert raw.max() > CLIP_MAX and raw.min() < CLIP_MIN
    clipped = Wild(epsilon=6)(channel_logits, images, LABELS).numpy()
    np.testing.assert_array_equal(clipped, np.clip(raw, CLIP_MIN, CLIP_MAX))


def test_a_minimal_perturbation_result_is_clipped_to_the_image_range(images):
    adversarial = Outside()(channel_logits, images, LABELS).numpy()
    np.testing.assert_array_equal(adversarial, np.clip(images * 3, CLIP_MIN, CLIP_MAX))


def test_a_result_inside_the_ball_is_left_bit_for_bit():
    """Projection bounds are `images -+ radius`: an `images + delta` with |delta| <= radius
    lies inside them however it rounded, so attacks that keep to their ball (cleverhans'
    PGD, EOT-PGD) give the same bits through the base class as before it."""
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (64, 4, 4, 3)).astype(np.float32)
    radius = np.float32(pixels_to_model(6))
    delta = rng.choice([-radius, radius, 0], images.shape).astype(np.float32)

    class Exact(FixedBudgetAttack):
        epsilon = 6.0

        def run(self, target, images, labels, *, targeted):
            return images + delta

    expected = np.clip(images + delta, CLIP_MIN, CLIP_MAX)
    np.testing.assert_array_equal(Exact()(channel_logits, images, np.zeros(64, int)), expected)


# ---------------------------------------------------------------- success


def test_success_is_judged_on_the_targets_prediction(images):
    predicted = predictions(channel_logits, images)
    np.testing.assert_array_equal(predicted, np.argmax(images.mean(axis=(1, 2)), axis=1))
    labels = predicted.copy()
    labels[0] = (labels[0] + 1) % 3
    attack = FGSM()
    np.testing.assert_array_equal(
        attack.success(channel_logits, images, labels), [True, False, False]
    )
    np.testing.assert_array_equal(
        attack.success(channel_logits, images, labels, targeted=True), [False, True, True]
    )
    np.testing.assert_array_equal(succeeded([1, 2], [1, 3]), [False, True])


def test_success_on_the_randomized_defense_is_its_decision(model, images):
    """The defense labels by the argmax of its scores over fresh patterns (one draw)."""
    defense = RandomizedDefense(model, TINY_DEFENSE, seed=4)
    expected = np.argmax(RandomizedDefense(model, TINY_DEFENSE, seed=4)(images), axis=1)
    success = EOTPGD().success(defense, images, expected)
    np.testing.assert_array_equal(success, np.zeros(3, bool))
