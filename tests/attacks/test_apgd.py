"""APGD: its step-size schedule against the paper's formula and conditions, its strength
against PGD on the digits CNN, and its EOT path through the randomized defense."""

import math

import numpy as np
import pytest
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.apgd import APGD, checkpoints, dlr_loss, halve_step
from attacks.pgd import PGD
from defense.common.errors import ParameterError
from defense.randomized_defense import RandomizedDefense
from tests.support.digits import DEFENSE, NUM_CLASSES
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

LABELS = np.array([1, 4, 7])


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_classifier(11, kernel=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


# --- the step-size schedule -------------------------------------------------------------


def reference_checkpoints(n_iter):
    """AutoAttack's integer schedule (autopgd_base.py): a first period of 0.22 * n_iter,
    each next one 0.03 * n_iter shorter, at least 0.06 * n_iter."""
    marks, period = [0], max(int(0.22 * n_iter), 1)
    while marks[-1] + period <= n_iter:
        marks.append(marks[-1] + period)
        period = max(period - max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1))
    return marks


def test_checkpoints_are_the_papers_formula():
    # p_j = 0, .22, .41, .57, .70, .80, .87, .93, .99 (1.05 is past the budget); w_j = ceil.
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # ceil(2.2), ceil(4.1), ...
    assert checkpoints(1) == [0, 1]
    for n_iter in (100, 200, 1000):
        assert checkpoints(n_iter) == reference_checkpoints(n_iter)


@pytest.mark.parametrize(
    ("increases", "period", "halved_before", "best", "best_before", "halve"),
    [
        (16, 22, True, 2.0, 1.0, True),  # condition 1: 16 < 0.75 * 22 = 16.5
        (17, 22, True, 2.0, 1.0, False),  # 17 rises in 22 steps, the best rose
        (17, 22, False, 1.0, 1.0, True),  # condition 2: not halved before, best unchanged
        (17, 22, True, 1.0, 1.0, False),  # ... but it was halved at the last checkpoint
        (17, 22, False, 1.5, 1.0, False),  # ... or the best rose
        (3, 4, False, 2.0, 1.0, False),  # 3 < 0.75 * 4 is false: condition 1 is strict
    ],
)
def test_halving_follows_the_two_conditions(
    increases, period, halved_before, best, best_before, halve
):
    decided = halve_step(
        np.array([increases]), period, np.array([halved_before]), [best], [best_before], 0.75
    )
    assert decided.numpy().tolist() == [halve]


def linear_logits(weights):
    """Two classes, logits (0, <w, x>): the cross-entropy of class 0 rises along sign(w)."""

    def logits(x):
        score = tf.reduce_sum(x * weights, axis=[1, 2, 3])
        return tf.stack([tf.zeros_like(score), score], axis=1)

    return logits


def test_on_a_linear_model_the_step_halves_at_every_checkpoint(images):
    """The first step reaches the ball's corner, where the loss stays put: condition 1
    halves the step at each checkpoint, and nowhere else."""
    weights = tf.constant(np.random.default_rng(1).normal(size=(1, 12, 12, 3)), tf.float32)
    tf.random.set_seed(0)
    trace = APGD(epsilon=8, n_iter=40).trace(linear_logits(weights), images, np.zeros(3, int))
    marks = checkpoints(40)[1:]
    halvings = [sum(0 < mark <= k for mark in marks) for k in range(40)]
    expected = 2 * pixels_to_model(8) / 2.0 ** np.array(halvings)
    np.testing.assert_allclose(trace.step_sizes.numpy(), np.repeat(expected[:, None], 3, 1))
    losses = trace.losses.numpy()
    assert (losses[1] > losses[0]).all() and (losses[2:] == losses[1]).all()
    corner = np.clip(images + pixels_to_model(8) * np.sign(weights.numpy()), -1, 1)
    np.testing.assert_allclose(trace.adversarial.numpy(), corner, atol=1e-6)


def replayed_step_sizes(losses, n_iter, rho):
    """The step sizes (relative to the first) that the paper's conditions give for a run's
    loss history, after Croce & Hein's Algorithm 1, written out here on its own."""
    marks = checkpoints(n_iter)[1:]
    size = np.ones(losses.shape[1])
    previous, best = losses[0].copy(), losses[0].copy()
    rises, halved_before, best_before, last = np.zeros_like(size), np.ones_like(size, bool), best, 0
    sizes = []
    for k in range(n_iter):
        sizes.append(size.copy())
        rises += losses[k + 1] > previous
        previous, best = losses[k + 1], np.maximum(best, losses[k + 1])
        if k + 1 in marks and k + 1 < n_iter:
            halve = (rises < rho * (k + 1 - last)) | (~halved_before & (best <= best_before))
            size = np.where(halve, size / 2, size)
            previous = np.where(halve, best, previous)  # restarted from the best point
            rises, halved_before, best_before, last = 0 * rises, halve, best.copy(), k + 1
    return np.array(sizes)


@pytest.mark.parametrize("dlr", [False, True])
def test_the_step_sizes_of_a_run_replay_from_its_losses(tiny_model, images, dlr):
    """Wherever the losses of a real run say to halve, the run halved, and nowhere else."""
    tf.random.set_seed(0)
    attack = APGD(epsilon=8, n_iter=30, dlr=dlr)
    trace = attack.trace(lambda x: tiny_model(x)["logits"], images, LABELS)
    relative = trace.step_sizes.numpy() / (2 * pixels_to_model(8))
    replayed = replayed_step_sizes(trace.losses.numpy(), 30, 0.75)
    np.testing.assert_array_equal(relative, replayed)
    changes = np.diff(relative, axis=0) != 0
    assert changes.any() and not changes[[m - 1 for m in checkpoints(30)[1:-1]]].all()


def test_dlr_is_the_papers_ratio():
    logits = tf.constant([[5.0, 3.0, 1.0, 0.0], [1.0, 4.0, 2.0, 0.0]])
    labels = tf.constant([0, 0], tf.int64)
    untargeted = dlr_loss(logits, labels).numpy()
    np.testing.assert_allclose(untargeted, [-(5 - 3) / (5 - 1), -(1 - 4) / (4 - 1)], rtol=1e-6)
    targeted = dlr_loss(logits, labels, targeted=True).numpy()
    np.testing.assert_allclose(targeted, [(5 - 3) / (5 - 0.5), (1 - 4) / (4 - 0.5)], rtol=1e-6)
    scaled = dlr_loss(3 * logits + 7, labels).numpy()
    np.testing.assert_allclose(scaled, untargeted, rtol=1e-5)


# --- on the digits CNN --------------------------------------------------------------------

IMAGES, EPSILON, ITERATIONS = 100, 16, 10


@pytest.fixture
def sample(digits_correct):
    return tuple(a[:IMAGES] for a in digits_correct)


def accuracy(logits_fn, images, labels) -> float:
    return float(np.mean(np.argmax(logits_fn(tf.constant(images)).numpy(), axis=1) == labels))


def test_apgd_ce_lowers_accuracy_at_least_as_much_as_pgd(digits_target, sample):
    """At 16 pixel units and 10 iterations: PGD 0.54 (step epsilon / 8) and 0.36
    (epsilon / 4), APGD 0.34 of 100 correctly classified images."""
    images, labels = sample
    found = {}
    for name, attack in [
        ("pgd", PGD(epsilon=EPSILON, steps=ITERATIONS)),
        ("pgd_wide", PGD(epsilon=EPSILON, step_size=EPSILON / 4, steps=ITERATIONS)),
        ("apgd", APGD(epsilon=EPSILON, n_iter=ITERATIONS)),
    ]:
        tf.random.set_seed(0)
        adversarial = attack(digits_target, images, labels).numpy()
        found[name] = accuracy(digits_target, adversarial, labels)
    assert found["apgd"] <= min(found["pgd"], found["pgd_wide"]), found
    assert found["apgd"] < 0.5
    assert np.abs(adversarial - images).max() <= pixels_to_model(EPSILON) + 1e-6
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX


def test_targeted_apgd_dlr_hits_the_targets(digits_target, sample):
    """About 94% of the targets at 48 pixel units (5% at 8: the CNN is robust)."""
    images, labels = sample
    targets = (labels + 3) % NUM_CLASSES
    tf.random.set_seed(0)
    attack = APGD(epsilon=48, n_iter=20, dlr=True)
    adversarial = attack(digits_target, images, targets, targeted=True).numpy()
    assert attack.success(digits_target, adversarial, targets, targeted=True).mean() > 0.85
    assert np.abs(adversarial - images).max() <= pixels_to_model(48) + 1e-6
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX


def test_restarts_keep_fooled_images_and_never_lose_ground(digits_target, sample):
    images, labels = sample[0][:20], sample[1][:20]
    tf.random.set_seed(3)
    once = APGD(epsilon=EPSILON, n_iter=5)(digits_target, images, labels)
    tf.random.set_seed(3)
    thrice = APGD(epsilon=EPSILON, n_iter=5, n_restarts=3)(digits_target, images, labels)
    fooled_once = np.argmax(digits_target(once).numpy(), 1) != labels
    fooled_thrice = np.argmax(digits_target(thrice).numpy(), 1) != labels
    assert (fooled_thrice >= fooled_once).all()
    np.testing.assert_array_equal(once.numpy()[fooled_once], thrice.numpy()[fooled_once])


def test_the_global_seed_reproduces_on_a_logits_function(digits_target, sample):
    images, labels = sample[0][:8], sample[1][:8]

    def run(seed):
        tf.random.set_seed(seed)
        return APGD(epsilon=EPSILON, n_iter=4)(digits_target, images, labels).numpy()

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


# --- on the randomized defense -------------------------------------------------------------


@pytest.mark.parametrize("samples", [2, 4])
def test_it_attacks_the_defense_through_eot_reproducibly(digits, sample, samples):
    images, labels = sample[0][:6], sample[1][:6]

    def run(seed, **params):
        defense = RandomizedDefense(digits.model, DEFENSE, chunk_size=3, seed=seed)
        attack = APGD(epsilon=EPSILON, n_iter=4, samples=samples, **params)
        return defense, attack(defense, images, labels).numpy()

    defense, first = run(5)
    np.testing.assert_array_equal(first, run(5)[1])
    assert not np.array_equal(first, run(6)[1])
    assert first.shape == images.shape
    assert 0 < np.abs(first - images).max() <= pixels_to_model(EPSILON) + 1e-6
    fresh = RandomizedDefense(digits.model, DEFENSE, seed=5).generator.state.numpy()
    assert not np.array_equal(defense.generator.state.numpy(), fresh)  # drew its patterns
    _, dlr = run(5, dlr=True)
    assert not np.array_equal(dlr, first)


def test_a_scores_defense_is_attacked_through_eot_not_refused(tiny_model, images):
    defense = RandomizedDefense(tiny_model, TINY_DEFENSE, seed=0)  # gives scores
    trace = APGD(epsilon=8, n_iter=5, samples=3).trace(defense, images, LABELS)
    assert trace.losses.shape == (6, 3) and trace.step_sizes.shape == (5, 3)
    assert np.isfinite(trace.losses.numpy()).all()
    targeted = APGD(epsilon=8, n_iter=3, samples=2, dlr=True)
    assert targeted(defense, images, LABELS, targeted=True).shape == images.shape


# --- hyper-parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"n_iter": 0}, "n_iter"),
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.0}, "rho"),
        ({"rho": math.nan}, "rho"),
        ({"momentum": -0.1}, "momentum"),
        ({"momentum": 1.5}, "momentum"),
        ({"samples": 0}, "samples"),
        ({"n_restarts": 0}, "n_restarts"),
        ({"dlr": "dlr"}, "dlr"),
        ({"epsilon": 0}, "epsilon"),
    ],
)
def test_bad_hyper_parameters_are_refused_naming_them(options, parameter):
    with pytest.raises(ParameterError) as raised:
        APGD(**options)
    assert raised.value.parameters[0] == parameter


def test_dlr_needs_three_classes_and_four_when_targeted(images):
    two = linear_logits(tf.ones((1, 12, 12, 3)))
    with pytest.raises(ParameterError, match="at least 3 classes") as raised:
        APGD(n_iter=1, dlr=True)(two, images, np.zeros(3, int))
    assert raised.value.parameters == ("dlr",)
    three = lambda x: tf.concat([two(x), two(x)[:, :1]], axis=1)  # noqa: E731
    APGD(n_iter=1, dlr=True)(three, images, np.zeros(3, int))
    with pytest.raises(ParameterError, match="at least 4 classes"):
        APGD(n_iter=1, dlr=True)(three, images, np.zeros(3, int), targeted=True)


def test_a_target_that_is_neither_is_refused(images):
    with pytest.raises(ParameterError, match="logits function") as raised:
        APGD()(object(), images, LABELS)
    assert raised.value.parameters == ("target",)
