"""DeepFool and C&W L2 on the trained digits CNN: strength, per-example semantics, and
agreement with foolbox's independent implementations of both attacks.

As in the paper (Section 4.1), attacks run on test images the model classifies
correctly. C&W runs with cleverhans' hyper-parameters except 100 instead of 1000
Adam steps per constant (binary-search step), ten times faster: on this model all
images are still fooled, with a median L2 about 5% above that of 1000 steps; foolbox
is compared at the same setting. One test runs the full hyper-parameters on a few
images.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from cleverhans.tf2.attacks.carlini_wagner_l2 import CarliniWagnerL2 as UpstreamCarliniWagnerL2
from cleverhans.tf2.attacks.carlini_wagner_l2 import (
    carlini_wagner_l2 as upstream_carlini_wagner_l2,
)

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, model_to_pixels
from attacks.carlini_wagner import CarliniWagnerL2
from attacks.deepfool import DeepFool
from tests.support.digits import CW_FAST_ITERATIONS, NUM_CLASSES

CW_TARGETED_IMAGES, CW_FULL_IMAGES = 20, 4
# The competition's largest L-infinity budget, in pixel units: "small" L2 means a
# median perturbation whose root-mean-square per pixel value stays below it.
SMALL_RMS_PIXELS = 16.0
# Independent implementations agree on the median L2 within this ratio.
MEDIAN_L2_TOLERANCE = 0.25


def predict(logits_fn: LogitsFn, images) -> np.ndarray:
    return np.argmax(logits_fn(tf.constant(images)).numpy(), axis=1)


def l2(images, originals) -> np.ndarray:
    difference = np.asarray(images) - np.asarray(originals)
    return np.linalg.norm(difference.reshape(len(difference), -1), axis=1)


def rms_pixels(distance: float, images: np.ndarray) -> float:
    """An L2 distance in model space as a root-mean-square per value, in pixel units."""
    return model_to_pixels(distance) / np.sqrt(images[0].size)


def assert_close_medians(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert abs(np.median(ours) / np.median(theirs) - 1) <= MEDIAN_L2_TOLERANCE


@pytest.fixture(scope="module")
def foolbox_model(digits_target):
    """The target model for foolbox (a test extra), traced once."""
    import foolbox

    return foolbox.TensorFlowModel(tf.function(digits_target), bounds=(CLIP_MIN, CLIP_MAX))


def test_deepfool_fools_the_undefended_model(deepfool_run, digits_target):
    images, labels, adversarial, steps = deepfool_run
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX
    assert np.mean(predict(digits_target, adversarial) == labels) <= 0.05
    assert rms_pixels(np.median(l2(adversarial, images)), images) < SMALL_RMS_PIXELS
    assert steps.min() >= 1 and np.median(steps) < 10


def cleverhans_deepfool(logits_fn: LogitsFn, images: np.ndarray, candidates: int) -> np.ndarray:
    """cleverhans 3.x's DeepFool loop, one example and one candidate at a time."""
    overshoot, max_iter = 0.02, 50
    original = predict(logits_fn, images)
    current = original.copy()
    r_tot = np.zeros_like(images)
    for _ in range(max_iter):
        if (current != original).all():
            break
        point = tf.constant(np.clip(images + r_tot, CLIP_MIN, CLIP_MAX))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(point)
            top = tf.math.top_k(logits_fn(point), k=candidates).values
            outputs = [top[:, k] for k in range(candidates)]
        gradients = [tape.gradient(output, point).numpy() for output in outputs]
        for i in np.flatnonzero(current == original):
            closest, direction = np.inf, None
            for k in range(1, candidates):
                w_k = gradients[k][i] - gradients[0][i]
                distance = (abs(top[i, k] - top[i, 0]) + 1e-5) / np.linalg.norm(w_k)
                if distance < closest:
                    closest, direction = distance, w_k
            r_tot[i] += closest * direction / np.linalg.norm(direction)
        current = predict(logits_fn, np.clip(images + r_tot, CLIP_MIN, CLIP_MAX))
    return np.clip(images + (1 + overshoot) * r_tot, CLIP_MIN, CLIP_MAX)


@pytest.mark.parametrize(("candidates", "every"), [(NUM_CLASSES, 4), (3, 2)])
def test_deepfool_follows_the_cleverhans_loop(deepfool_run, digits_target, candidates, every):
    """With fewer candidates than classes they are re-ranked at every step, which here
    changes the result of about one image in a hundred."""
    images = deepfool_run[0][::every]
    ours = DeepFool(nb_candidate=candidates)(digits_target, images).numpy()
    np.testing.assert_allclose(
        ours, cleverhans_deepfool(digits_target, images, candidates), atol=1e-5
    )


def test_deepfool_stops_each_example_when_its_label_changes(deepfool_run, digits_target):
    images, _, adversarial, steps = deepfool_run
    for max_iter in (1, 3):
        early, early_steps = DeepFool(max_iter=max_iter).with_steps(digits_target, images)
        np.testing.assert_array_equal(early_steps, np.minimum(steps, max_iter))
        done = steps <= max_iter
        assert done.any() and not done.all()
        # Fooled within max_iter steps: the full run did not move them any further.
        np.testing.assert_allclose(early.numpy()[done], adversarial[done], atol=1e-6)
        assert (l2(early.numpy()[~done], adversarial[~done]) > 0).all()


def test_deepfool_results_do_not_depend_on_the_batch(deepfool_run, digits_target):
    images, _, adversarial, steps = deepfool_run
    pick = np.argsort(steps)[-4:]  # the slowest: batched with the most others before
    alone, alone_steps = DeepFool().with_steps(digits_target, images[pick])
    np.testing.assert_array_equal(alone_steps, steps[pick])
    np.testing.assert_allclose(alone.numpy(), adversarial[pick], atol=1e-4)


def test_deepfool_moves_away_from_the_models_own_prediction(digits, digits_target):
    wrong = predict(digits_target, digits.x_test) != digits.y_test
    images = digits.x_test[wrong]
    assert len(images) > 0
    adversarial = DeepFool()(digits_target, images)
    assert (predict(digits_target, adversarial) != predict(digits_target, images)).all()


def test_deepfool_checks_its_candidates(digits_target, digits_correct):
    with pytest.raises(ValueError, match="exceeds the 10 classes"):
        DeepFool(nb_candidate=NUM_CLASSES + 1)(digits_target, digits_correct[0][:2])
    with pytest.raises(ValueError, match="nb_candidate must be >= 2"):
        DeepFool(nb_candidate=1)


@pytest.mark.slow
def test_deepfool_agrees_with_foolbox(deepfool_run, digits_target, foolbox_model):
    import foolbox

    images, labels, adversarial, _ = deepfool_run
    attack = foolbox.attacks.L2DeepFoolAttack(
        steps=50, candidates=10, overshoot=0.02, loss="logits"
    )
    theirs, _, success = attack(
        foolbox_model, tf.constant(images), tf.constant(labels), epsilons=None
    )
    ours_success = predict(digits_target, adversarial) != labels
    assert abs(success.numpy().mean() - ours_success.mean()) <= 0.05
    assert_close_medians(l2(adversarial, images), l2(theirs.numpy(), images))


def test_upstream_cleverhans_carlini_wagner_fails(digits_target, digits_correct):
    """cleverhans 4.0.0's C&W on Keras 3; if this starts passing, upstream may be usable."""
    import tf_keras

    images = digits_correct[0][:4]
    # Keras 3 optimizers have a `variables` list, not the method cleverhans calls.
    with pytest.raises(TypeError, match="'list' object is not callable"):
        upstream_carlini_wagner_l2(digits_target, images, clip_min=CLIP_MIN, clip_max=CLIP_MAX)
    # Past that (a legacy optimizer), `const` has the images' shape, not [batch] (issue #1205).
    attack = UpstreamCarliniWagnerL2(
        digits_target, clip_min=CLIP_MIN, clip_max=CLIP_MAX, max_iterations=1
    )
    attack.optimizer = tf_keras.optimizers.Adam(attack.learning_rate)
    with pytest.raises(ValueError, match="Dimensions must be equal"):
        attack.attack(images)


def test_carlini_wagner_fools_the_undefended_model(cw_run, digits_target):
    images, labels, adversarial = cw_run
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX
    fooled = predict(digits_target, adversarial) != labels
    assert fooled.mean() >= 0.95
    assert rms_pixels(np.median(l2(adversarial, images)), images) < SMALL_RMS_PIXELS
    np.testing.assert_array_equal(adversarial[~fooled], images[~fooled])


def test_carlini_wagner_returns_the_originals_where_it_fails(digits_target, digits_correct):
    images, labels = (a[:4] for a in digits_correct)
    adversarial = CarliniWagnerL2(binary_search_steps=1, max_iterations=5)(
        digits_target, images, labels
    )
    np.testing.assert_array_equal(adversarial.numpy(), images)


def test_carlini_wagner_keeps_the_confidence_margin(digits_target, digits_correct):
    images, labels = (a[:10] for a in digits_correct)
    confidence = 3.0
    adversarial = CarliniWagnerL2(confidence=confidence, max_iterations=CW_FAST_ITERATIONS)(
        digits_target, images, labels
    )
    changed = l2(adversarial, images) > 0
    assert changed.sum() >= 8
    logits = digits_target(adversarial).numpy()[changed]
    true = logits[np.arange(len(logits)), labels[changed]]
    others = np.where(np.eye(NUM_CLASSES, dtype=bool)[labels[changed]], -np.inf, logits)
    assert (others.max(axis=1) - true >= confidence - 1e-4).all()


def test_carlini_wagner_results_do_not_depend_on_the_batch(digits_target, digits_correct):
    images, labels = (a[:6] for a in digits_correct)
    settings = {"max_iterations": 30, "binary_search_steps": 3}
    attack = CarliniWagnerL2(**settings)
    together = attack(digits_target, images, labels).numpy()
    apart = [attack(digits_target, images[i : i + 3], labels[i : i + 3]) for i in (0, 3)]
    np.testing.assert_allclose(np.concatenate(apart), together, atol=1e-4)


def test_carlini_wagner_targeted_reaches_the_targets(digits_target, digits_correct):
    images, labels = (a[:CW_TARGETED_IMAGES] for a in digits_correct)
    targets = (labels + 1 + np.arange(len(labels)) % (NUM_CLASSES - 1)) % NUM_CLASSES
    # Adam moves each value by about learning_rate per step: 100 steps of 5e-3 reach
    # only 75% of these targets, 100 steps of 1e-2 (or 300 of 5e-3) all of them.
    attack = CarliniWagnerL2(learning_rate=1e-2, max_iterations=CW_FAST_ITERATIONS)
    adversarial = attack(digits_target, images, targets, targeted=True)
    assert np.mean(predict(digits_target, adversarial) == targets) >= 0.9


@pytest.mark.slow
def test_carlini_wagner_agrees_with_foolbox(cw_run, digits_target, foolbox_model):
    import foolbox

    images, labels, adversarial = cw_run
    attack = foolbox.attacks.L2CarliniWagnerAttack(
        binary_search_steps=5,
        steps=CW_FAST_ITERATIONS,
        stepsize=5e-3,
        confidence=0.0,
        initial_const=1e-2,
        abort_early=True,
    )
    theirs, _, success = attack(
        foolbox_model, tf.constant(images), tf.constant(labels), epsilons=None
    )
    ours_success = predict(digits_target, adversarial) != labels
    assert abs(success.numpy().mean() - ours_success.mean()) <= 0.05
    assert_close_medians(l2(adversarial, images), l2(theirs.numpy(), images))


@pytest.mark.slow
def test_carlini_wagner_with_the_papers_hyperparameters(cw_run, digits_target):
    images, labels, fast = (a[:CW_FULL_IMAGES] for a in cw_run)
    adversarial = CarliniWagnerL2()(digits_target, images, labels).numpy()
    assert (predict(digits_target, adversarial) != labels).all()
    # Ten times the Adam steps per constant: no larger, and not much smaller (about 5%).
    full, short = np.median(l2(adversarial, images)), np.median(l2(fast, images))
    assert 0.85 * short <= full <= 1.01 * short


def counting(model):
    """`model`'s logits, and a list that grows by one at every Python call (each trace)."""
    calls = []

    def logits_fn(x):
        calls.append(x.shape)
        return model(x)["logits"]

    return logits_fn, calls


@pytest.mark.parametrize("attack", ["deepfool", "cw"])
def test_a_second_call_on_the_same_model_is_not_traced_again(attack):
    from tests.support.tiny_models import tiny_classifier

    logits_fn, calls = counting(tiny_classifier(5, kernel=3))
    images = tf.constant(np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)), tf.float32)
    if attack == "deepfool":
        run = DeepFool(nb_candidate=3, max_iter=3)
        arguments = (logits_fn, images)
    else:
        run = CarliniWagnerL2(max_iterations=4, binary_search_steps=2)
        arguments = (logits_fn, images, [0, 1, 2])
    first = run(*arguments).numpy()
    traced = len(calls)
    second = run(*arguments).numpy()
    # DeepFool asks one eager call for the number of classes; nothing else runs Python.
    assert len(calls) - traced == (1 if attack == "deepfool" else 0)
    np.testing.assert_array_equal(first, second)
