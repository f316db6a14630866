"""Auto-PGD (Croce & Hein, ICML 2020), L-infinity: PGD whose step size sets itself.

APGD starts with a step of 2 * epsilon and, at checkpoints `checkpoints(n_iter)`
(fractions 0, 0.22, 0.41, ... of the budget), halves it per image and restarts from
the image's best point when the loss stopped rising (`halve_step`: condition 1,
fewer than `rho` of the period's steps raised the loss; condition 2, the step was
not halved at the previous checkpoint and the best loss did not rise since). Each
step is a signed-gradient step `z` followed by momentum:
`x_{k+1} = P(x_k + momentum * (z - x_k) + (1 - momentum) * (x_k - x_{k-1}))`.
The loss is the cross-entropy or the scale-invariant DLR (`dlr_loss`).

Against `defense.RandomizedDefense` (AutoAttack's `rand` version) every step
averages the loss, its gradient and the defense's scores over `samples` fresh
patterns (`RandomizedDefense.eot_estimate`, in the defense's chunks): the loss the
step size follows is measured on the same randomized passes as the gradient, as
AutoAttack does.

Success per step is judged on the pass it came from (the argmax of the logits, or
of the defense's mean scores over the step's patterns). Per image the result is
its latest successful point, else its highest-loss point; restarts (from fresh
random points of the ball) run on the images not yet fooled. Random starts come
from the defense's generator (a seeded defense gives the same adversarials, as
for EOT-PGD), on a logits function from TensorFlow's global seed (as for PGD).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import numpy.typing as npt
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from attacks.kinds import FixedBudgetAttack, Target, check_count, check_epsilon, check_number
from defense.common.errors import ParameterError
from defense.randomized_defense import RandomizedDefense

# The checkpoints' fractions of the budget: p_1, the shrink of each period, its minimum.
FIRST_PERIOD, PERIOD_SHRINK, MIN_PERIOD = Fraction(22, 100), Fraction(3, 100), Fraction(6, 100)
# Added to DLR's denominator (Croce & Hein's), against a division by zero.
DLR_EPSILON = 1e-12

# (images, labels) -> per image (loss, its gradient, predicted label).
Objective = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


def checkpoints(n_iter: int) -> list[int]:
    """The iterations w_j = ceil(p_j * n_iter) at which APGD checks its step size, from
    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) while p_j <= 1.

    In exact fractions: in floats 0.22 + 0.19 is 0.41000000000000003, whose
    ceiling at 100 iterations would be 42 instead of 41.
    """
    fractions = [Fraction(0), FIRST_PERIOD]
    while fractions[-1] <= 1:
        last, before = fractions[-1], fractions[-2]
        fractions.append(last + max(last - before - PERIOD_SHRINK, MIN_PERIOD))
    return sorted({math.ceil(p * n_iter) for p in fractions if p <= 1})


def halve_step(
    increases: npt.ArrayLike | tf.Tensor,
    period: int,
    halved_before: npt.ArrayLike | tf.Tensor,
    best: npt.ArrayLike | tf.Tensor,
    best_before: npt.ArrayLike | tf.Tensor,
    rho: float,
) -> tf.Tensor:
    """Per image, whether APGD halves its step size at a checkpoint (and goes back to
    its best point).

    Condition 1: fewer than `rho * period` of the `period` steps since the previous
    checkpoint raised the loss (`increases` counts them). Condition 2: the step
    size was not halved at the previous checkpoint (`halved_before`) and the best
    loss `best` is no higher than it was there (`best_before`).
    """
    increases = tf.cast(increases, tf.float32)
    oscillating = increases < rho * period
    stalled = tf.logical_and(
        tf.logical_not(tf.cast(halved_before, tf.bool)),
        tf.cast(best, tf.float32) <= tf.cast(best_before, tf.float32),
    )
    return tf.logical_or(oscillating, stalled)


def dlr_loss(logits: tf.Tensor, labels: tf.Tensor, *, targeted: bool = False) -> tf.Tensor:
    """Per item, the difference-of-logits-ratio loss to raise, invariant to the logits'
    shift and scale (z sorted descending: z_pi1 >= z_pi2 >= ...).

    Untargeted: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3). Targeted, `labels` the
    targets t: -(max_{i != t} z_i - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); the
    reference's z_y of the true label is the highest other logit here, as the
    targeted call has no true labels. Needs 3 classes (targeted: 4).
    """
    logits = tf.cast(logits, tf.float32)
    needed = 4 if targeted else 3
    classes = logits.shape[-1]
    if classes is not None and classes < needed:
        kind = "targeted " if targeted else ""
        raise ParameterError(
            f"the {kind}DLR loss needs at least {needed} classes, got {classes}: use dlr=False",
            "dlr",
        )
    top = tf.math.top_k(logits, k=needed).values
    own = tf.gather(logits, labels, batch_dims=1)
    is_own = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    other = tf.reduce_max(tf.where(is_own, -math.inf, logits), axis=-1)
    if targeted:
        return (own - other) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + DLR_EPSILON)
    return (other - own) / (top[:, 0] - top[:, 2] + DLR_EPSILON)


def item_loss(logits: tf.Tensor, labels: tf.Tensor, *, dlr: bool, targeted: bool) -> tf.Tensor:
    """Per item, the loss APGD raises: the cross-entropy of `labels` (targeted: its
    negative) or the DLR loss."""
    if dlr:
        return dlr_loss(logits, labels, targeted=targeted)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32)
    )
    return -cross_entropy if targeted else cross_entropy


def logits_objective(target: LogitsFn, *, dlr: bool, targeted: bool) -> Objective:
    """Loss, gradient and argmax of a logits function, compiled once per shape."""

    # Without autograph, a ParameterError raised while tracing (DLR's classes) stays one.
    @tf.function(autograph=False)
    def objective(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = target(images)
            losses = item_loss(logits, labels, dlr=dlr, targeted=targeted)
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, images), tf.argmax(logits, axis=-1)

    return objective


# One function per (dlr, targeted), the same each call: the defense compiles its
# chunks once per item loss.
_ITEM_LOSSES = {
    (dlr, targeted): functools.partial(item_loss, dlr=dlr, targeted=targeted)
    for dlr in (False, True)
    for targeted in (False, True)
}


def eot_objective(
    defense: RandomizedDefense, samples: int, *, dlr: bool, targeted: bool
) -> Objective:
    """Per image, the loss and its gradient averaged over `samples` fresh patterns of
    `defense`, and the argmax of its scores averaged over the same patterns
    (`RandomizedDefense.eot_estimate`, the EOT gradient EOT-PGD follows too)."""
    loss = _ITEM_LOSSES[dlr, targeted]

    def objective(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        estimate = defense.eot_estimate(images, labels, samples=samples, item_loss=loss)
        return estimate.losses, estimate.gradient, tf.argmax(estimate.scores, axis=-1)

    return objective


class Trace(NamedTuple):
    """One APGD run from one random start, with its history (model units)."""

    adversarial: tf.Tensor  # per image its latest successful point, else its highest-loss one
    best_loss: tf.Tensor  # [N] the highest loss reached
    success: tf.Tensor  # [N] whether some point succeeded
    losses: tf.Tensor  # [n_iter + 1, N] the loss of each iterate x_0 ... x_n_iter
    step_sizes: tf.Tensor  # [n_iter, N] the step size of each step


def _pick(mask: tf.Tensor, chosen: tf.Tensor, other: tf.Tensor) -> tf.Tensor:
    """Per image (the first axis), `chosen` where `mask` else `other`."""
    shape = tf.concat([tf.shape(mask), tf.ones([tf.rank(chosen) - 1], tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), chosen, other)


class APGD(FixedBudgetAttack):
    """Auto-PGD within an L-infinity ball: step size halved when the loss stops rising.

    On a logits function it is plain APGD; on a `defense.RandomizedDefense` each step
    follows the EOT gradient over `samples` fresh patterns, and the step-size
    schedule the loss averaged over the same patterns (AutoAttack's `rand` version).

    Hyper-parameters:
        epsilon: L-infinity budget in pixel units (the competition's 16).
        n_iter: Iterations per restart.
        rho: Halve the step at a checkpoint where fewer than this fraction of the
            steps since the last one raised the loss.
        momentum: Weight of the new step; the previous step gets 1 - momentum.
        n_restarts: Random restarts, run on the images not fooled yet.
        dlr: The DLR loss instead of the cross-entropy (targeted: the targeted DLR).
        samples: Random patterns per EOT gradient on the randomized defense (unused
            on a logits function).
    """

    # Attacks the defense in the catalog's runs; a logits function is accepted too.
    on_defense = True

    def __init__(
        self,
        *,
        epsilon: float = 16.0,
        n_iter: int = 100,
        rho: float = 0.75,
        momentum: float = 0.75,
        n_restarts: int = 1,
        dlr: bool = False,
        samples: int = 20,
    ) -> None:
        check_epsilon(epsilon)
        check_count("n_iter", n_iter, 1)
        if isinstance(rho, bool) or not (isinstance(rho, numbers.Real) and 0 < rho < 1):
            raise ParameterError(f"rho must be a number in (0, 1), got {rho!r}", "rho")
        check_number("momentum", momentum, 0, high=1)
        check_count("n_restarts", n_restarts, 1)
        if not isinstance(dlr, bool):
            raise ParameterError(f"dlr must be True or False, got {dlr!r}", "dlr")
        check_count("samples", samples, 1)
        self.epsilon = epsilon
        self.n_iter: int = n_iter
        self.rho: float = rho
        self.momentum: float = momentum
        self.n_restarts: int = n_restarts
        self.dlr: bool = dlr
        self.samples: int = samples

    def run(
        self, target: Target, images: tf.Tensor, labels: tf.Tensor, *, targeted: bool
    ) -> tf.Tensor:
        """Per image, the successful point of the first restart that fooled the target,
        else the highest-loss point of all restarts."""
        objective = self._objective(target, targeted)
        adversarial, success = images, tf.zeros(images.shape[:1], tf.bool)
        best_loss = tf.fill(images.shape[:1], -math.inf)
        for _ in range(self.n_restarts):
            todo = tf.where(tf.logical_not(success))
            if todo.shape[0] == 0:
                break
            trace = self._single_run(
                objective, tf.gather_nd(images, todo), tf.gather_nd(labels, todo), target, targeted
            )
            better = tf.logical_or(trace.success, trace.best_loss > tf.gather_nd(best_loss, todo))
            changed = tf.boolean_mask(todo, better)
            adversarial = tf.tensor_scatter_nd_update(
                adversarial, changed, tf.boolean_mask(trace.adversarial, better)
            )
            best_loss = tf.tensor_scatter_nd_update(
                best_loss, changed, tf.boolean_mask(trace.best_loss, better)
            )
            success = tf.tensor_scatter_nd_update(success, todo, trace.success)
        return adversarial

    def trace(
        self,
        target: Target,
        images: npt.ArrayLike | tf.Tensor,
        labels: npt.ArrayLike | tf.Tensor,
        *,
        targeted: bool = False,
    ) -> Trace:
        """One run from one random start with its loss and step-size history: what
        `run` does per restart, to see whether the loss converged."""
        self._check_target(target)
        checked, checked_labels = self._inputs(images, labels, targeted=targeted)
        assert checked_labels is not None, "APGD uses labels"
        objective = self._objective(target, targeted)
        return self._single_run(objective, checked, checked_labels, target, targeted)

    def _check_target(self, target: object) -> None:
        """A `RandomizedDefense` (attacked through EOT, whatever its output) or a logits
        function."""
        if not isinstance(target, RandomizedDefense) and not callable(target):
            raise ParameterError(
                "target must be a logits function (images -> logits) or a "
                f"defense.RandomizedDefense, got {type(target).__name__}",
                "target",
            )

    def _objective(self, target: Target, targeted: bool) -> Objective:
        """The loss, gradient and prediction each step evaluates."""
        if isinstance(target, RandomizedDefense):
            return eot_objective(target, self.samples, dlr=self.dlr, targeted=targeted)
        return logits_objective(target, dlr=self.dlr, targeted=targeted)

    def _single_run(
        self,
        objective: Objective,
        images: tf.Tensor,
        labels: tf.Tensor,
        target: Target,
        targeted: bool,
    ) -> Trace:
        """APGD (Croce & Hein's Algorithm 1) from one random start, per image."""
        radius = pixels_to_model(self.epsilon)

        def project(candidates: tf.Tensor) -> tf.Tensor:
            candidates = images + tf.clip_by_value(candidates - images, -radius, radius)
            return tf.clip_by_value(candidates, CLIP_MIN, CLIP_MAX)

        @tf.function(autograph=False)
        def move(
            current: tf.Tensor,
            previous: tf.Tensor,
            gradient: tf.Tensor,
            step_size: tf.Tensor,
            weight: tf.Tensor,
        ) -> tf.Tensor:
            step = project(current + step_size[:, None, None, None] * tf.sign(gradient))
            momentum_term = (1 - weight) * (current - previous)
            return project(current + weight * (step - current) + momentum_term)

        def succeeded(predicted: tf.Tensor) -> tf.Tensor:
            hit = tf.equal(predicted, labels)
            return hit if targeted else tf.logical_not(hit)

        current = project(images + self._start(target, images.shape, radius))
        loss, gradient, predicted = objective(current, labels)
        previous, success = current, succeeded(predicted)
        found = _pick(success, current, images)
        best, best_loss, best_gradient = current, loss, gradient
        step_size = tf.fill(images.shape[:1], 2 * radius)
        marks, last_mark = set(checkpoints(self.n_iter)[1:]), 0
        increases, halved, best_at_mark = tf.zeros_like(loss), tf.ones_like(success), best_loss
        losses, step_sizes = [loss], []
        for k in range(self.n_iter):
            weight = tf.constant(1.0 if k == 0 else self.momentum)
            step_sizes.append(step_size)
            moved = move(current, previous, gradient, step_size, weight)
            new_loss, new_gradient, predicted = objective(moved, labels)
            losses.append(new_loss)
            increases += tf.cast(new_loss > loss, tf.float32)
            improved = new_loss > best_loss
            best = _pick(improved, moved, best)
            best_gradient = _pick(improved, new_gradient, best_gradient)
            best_loss = tf.maximum(new_loss, best_loss)
            hit = succeeded(predicted)
            found, success = _pick(hit, moved, found), tf.logical_or(success, hit)
            previous, current, gradient, loss = current, moved, new_gradient, new_loss
            if k + 1 in marks and k + 1 < self.n_iter:
                halved = halve_step(
                    increases, k + 1 - last_mark, halved, best_loss, best_at_mark, self.rho
                )
                step_size = tf.where(halved, step_size / 2, step_size)
                # From the best point, without momentum across the jump.
                current = _pick(halved, best, current)
                previous = _pick(halved, best, previous)
                gradient = _pick(halved, best_gradient, gradient)
                loss = tf.where(halved, best_loss, loss)
                increases, best_at_mark, last_mark = tf.zeros_like(loss), best_loss, k + 1
        return Trace(
            adversarial=_pick(success, found, best),
            best_loss=best_loss,
            success=success,
            losses=tf.stack(losses),
            step_sizes=tf.stack(step_sizes),
        )

    @staticmethod
    def _start(target: Target, shape: Any, radius: float) -> tf.Tensor:
        """A uniform random offset in the ball: from the defense's generator, else from
        TensorFlow's global seed."""
        if isinstance(target, RandomizedDefense):
            return target.generator.uniform(shape, -radius, radius)
        return tf.random.uniform(shape, -radius, radius)
