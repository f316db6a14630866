"""FGSM and PGD (through cleverhans) on the trained digits CNN: exact budgets, and that
they attack what they are given (true labels, targets, a scenario's mean logits)."""

import numpy as np
import pytest
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.evaluation.protocol import PAPER_EPSILONS
from attacks.evaluation.scenarios import build_scenario, target_model
from attacks.fgsm import FGSM
from attacks.kinds import check_linf_budget
from attacks.pgd import PGD
from tests.support.digits import INPUT_SIZE, NUM_CLASSES, OUT_SIZE

IMAGES = 60


@pytest.fixture
def sample(digits_correct):
    return tuple(a[:IMAGES] for a in digits_correct)


def accuracy(logits_fn, images, labels) -> float:
    return float(np.mean(np.argmax(logits_fn(tf.constant(images)).numpy(), axis=1) == labels))


@pytest.mark.parametrize("epsilon", PAPER_EPSILONS)
def test_fgsm_moves_every_value_by_exactly_epsilon_before_clipping(digits_target, sample, epsilon):
    images, labels = sample
    raw = FGSM(epsilon=epsilon)(digits_target, images, labels, clip=False).numpy()
    step = np.abs(raw - images)
    moved = step > 0
    assert moved.mean() > 0.5
    np.testing.assert_allclose(step[moved], pixels_to_model(epsilon), rtol=1e-5)
    clipped = FGSM(epsilon=epsilon)(digits_target, images, labels).numpy()
    np.testing.assert_array_equal(clipped, np.clip(raw, CLIP_MIN, CLIP_MAX))


def test_fgsm_untargeted_lowers_and_targeted_raises(digits_target, sample):
    images, labels = sample
    assert accuracy(digits_target, FGSM(epsilon=24)(digits_target, images, labels), labels) < 0.5
    targets = (labels + 3) % NUM_CLASSES
    towards = FGSM(epsilon=24)(digits_target, images, targets, targeted=True)
    before = tf.nn.log_softmax(digits_target(tf.constant(images))).numpy()
    after = tf.nn.log_softmax(digits_target(towards)).numpy()
    rows = np.arange(len(targets))
    assert np.mean(after[rows, targets] > before[rows, targets]) > 0.9


@pytest.mark.parametrize("epsilon", [0, -1, 256])
def test_fgsm_refuses_epsilons_outside_the_pixel_range(epsilon):
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 255\] pixel units"):
        FGSM(epsilon=epsilon)


def test_pgd_stays_in_its_ball_and_beats_fgsm(digits_target, sample):
    images, labels = sample
    tf.random.set_seed(0)
    adversarial = PGD(epsilon=16, step_size=4, steps=10)(digits_target, images, labels).numpy()
    assert np.abs(adversarial - images).max() <= pixels_to_model(16) + 1e-6
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX
    one_step = FGSM(epsilon=16)(digits_target, images, labels)
    assert accuracy(digits_target, adversarial, labels) < accuracy(digits_target, one_step, labels)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ((0, 1, 1), "epsilon must be in"),
        ((16, 17, 1), r"step_size must be in \(0, epsilon=16\]"),
        ((16, 2, 0), "steps must be >= 1"),
    ],
)
def test_pgd_budget_checks(budget, message):
    with pytest.raises(ValueError, match=message):
        check_linf_budget(*budget)


def test_ensemble_scenario_is_attacked_through_its_mean_logits(digits, sample):
    """FGSM on the 21-pattern scenario follows the gradient of the mean of its logits."""
    images, labels = sample
    scenario = build_scenario("ensemble_pattern", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    ensemble = target_model(digits.model, scenario)
    x = tf.constant(images[:8])
    with tf.GradientTape() as tape:
        tape.watch(x)
        mean = tf.reduce_mean(ensemble.pattern_logits(x), axis=0)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[:8], mean)
    expected = np.clip(
        images[:8] + pixels_to_model(8) * np.sign(tape.gradient(loss, x).numpy()),
        CLIP_MIN,
        CLIP_MAX,
    )
    ours = FGSM(epsilon=8)(ensemble.logits, images[:8], labels[:8]).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
