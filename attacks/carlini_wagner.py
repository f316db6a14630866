"""Carlini & Wagner L2 (2017) with cleverhans' hyper-parameters and semantics, in TF2.

cleverhans 4.0.0's `cleverhans.tf2.attacks.carlini_wagner_l2` cannot run on
TF 2.21 / Keras 3: it resets Adam with `optimizer.variables()`, a list (not a
method) in Keras 3, and with a legacy optimizer it fails on its `const`, made
with the image's shape instead of the batch's (cleverhans issue #1205). It also
ignores `targeted` (any given `y` is a target), adds the confidence to every
logit (a no-op on the argmax) and drives the binary search with the best score
over all steps. This is an own implementation of cleverhans 3.x's `CWL2`,
vectorised over the batch with per-example results as with its batch_size=1:
- the image is `(tanh(w) + 1) / 2` scaled to [CLIP_MIN, CLIP_MAX], w starting
  at the original in tanh space (times 0.999999 to stay finite);
- the loss per example is `||x' - x||^2 + c * max(0, Z_y - max_{i!=y} Z_i + k)`
  (targeted: `max(0, max_{i!=t} Z_i - Z_t + k)`), minimised with Adam (TF1's
  update, epsilon 1e-8), from scratch for each constant;
- early abort per example when its loss did not drop by 0.01% over a tenth of
  max_iterations;
- per-example binary search on c: halve towards the lower bound after a success,
  else multiply by 10 until a success bounds it; with 10 or more search steps the
  last one repeats the upper bound;
- the result is the successful example of smallest L2 over all steps, or the
  original image where none succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn
from attacks.kinds import MinimalPerturbationAttack, check_count, check_number

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8
_TANH_SHRINK = 0.999999
_NO_BOUND = 1e10


class CarliniWagnerL2(MinimalPerturbationAttack):
    """C&W L2 examples: away from the labels, or towards them when targeted.

    Images are clipped to [CLIP_MIN, CLIP_MAX] first; unsuccessful examples come
    back unchanged.

    Hyper-parameters:
        confidence: Logit margin k of a success.
        learning_rate: Adam learning rate.
        binary_search_steps: Binary search steps over the constant c.
        max_iterations: Adam iterations per search step.
        initial_const: Initial constant c.
        abort_early: Stop a search step when the loss stalls.
    """

    def __init__(
        self,
        *,
        confidence: float = 0.0,
        learning_rate: float = 5e-3,
        binary_search_steps: int = 5,
        max_iterations: int = 1000,
        initial_const: float = 1e-2,
        abort_early: bool = True,
    ) -> None:
        check_number("confidence", confidence, 0)
        check_number("learning_rate", learning_rate, 0, strictly=True)
        check_count("binary_search_steps", binary_search_steps, 1)
        check_count("max_iterations", max_iterations, 1)
        check_number("initial_const", initial_const, 0, strictly=True)
        self.confidence = confidence
        self.learning_rate = learning_rate
        self.binary_search_steps = binary_search_steps
        self.max_iterations = max_iterations
        self.initial_const = initial_const
        self.abort_early = abort_early
        # The compiled optimiser per (model, targeted), built once: a new tf.function
        # at every call would trace again at every call.
        self._optimisers: dict[tuple[LogitsFn, bool], Callable[..., Any]] = {}

    def run(
        self, target: LogitsFn, images: tf.Tensor, labels: tf.Tensor, *, targeted: bool
    ) -> tf.Tensor:
        """The C&W examples of `images`."""
        images = tf.clip_by_value(images, CLIP_MIN, CLIP_MAX)
        labels = tf.cast(labels, tf.int32)
        key = (target, targeted)
        if key not in self._optimisers:
            self._optimisers[key] = _optimiser(
                target,
                targeted=targeted,
                confidence=self.confidence,
                learning_rate=self.learning_rate,
                max_iterations=self.max_iterations,
                abort_early=self.abort_early,
            )
        optimise = self._optimisers[key]
        return _binary_search(
            optimise, images, labels, self.binary_search_steps, self.initial_const
        )


def _binary_search(
    optimise: Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]],
    images: tf.Tensor,
    labels: tf.Tensor,
    binary_search_steps: int,
    initial_const: float,
) -> tf.Tensor:
    """The per-example binary search on c, keeping the closest success of any step."""
    unit = (images - CLIP_MIN) / (CLIP_MAX - CLIP_MIN)
    start = tf.atanh((unit * 2.0 - 1.0) * _TANH_SHRINK)

    count = int(images.shape[0])
    lower = np.zeros(count)
    upper = np.full(count, _NO_BOUND)
    const = np.full(count, initial_const)
    best_l2 = tf.fill([count], float("inf"))
    best = images
    for step in range(binary_search_steps):
        if binary_search_steps >= 10 and step == binary_search_steps - 1:
            const = upper
        best_l2, best, succeeded = optimise(
            start, labels, tf.constant(const, tf.float32), best_l2, best
        )
        succeeded = succeeded.numpy()
        upper = np.where(succeeded, np.minimum(upper, const), upper)
        lower = np.where(succeeded, lower, np.maximum(lower, const))
        unbounded = np.where(succeeded, const, const * 10.0)
        const = np.where(upper < _NO_BOUND, (lower + upper) / 2.0, unbounded)
    return best


def _optimiser(
    logits_fn: LogitsFn,
    *,
    targeted: bool,
    confidence: float,
    learning_rate: float,
    max_iterations: int,
    abort_early: bool,
) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """Adam on the C&W loss for one constant per example, as a tf.function.

    It returns the best L2 and examples so far (updated) and, per example,
    whether this constant gave a success.
    """
    check_every = max(max_iterations // 10, 1)

    def to_image(w: tf.Tensor) -> tf.Tensor:
        return (tf.tanh(w) + 1.0) / 2.0 * (CLIP_MAX - CLIP_MIN) + CLIP_MIN

    def successful(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        shift = -confidence if targeted else confidence
        shifted = logits + shift * tf.one_hot(labels, tf.shape(logits)[-1])
        hit = tf.equal(tf.argmax(shifted, axis=-1, output_type=tf.int32), labels)
        return hit if targeted else tf.logical_not(hit)

    @tf.function
    def run(
        start: tf.Tensor,
        labels: tf.Tensor,
        const: tf.Tensor,
        best_l2: tf.Tensor,
        best: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        original = to_image(start)
        w = start
        m = tf.zeros_like(start)
        v = tf.zeros_like(start)
        previous = tf.fill(tf.shape(const), 1e6)
        active = tf.ones_like(const, dtype=tf.bool)
        succeeded = tf.zeros_like(active)
        for i in tf.range(max_iterations):
            with tf.GradientTape() as tape:
                tape.watch(w)
                image = to_image(w)
                logits = logits_fn(image)
                l2 = tf.reduce_sum(tf.square(image - original), axis=[1, 2, 3])
                one_hot = tf.one_hot(labels, tf.shape(logits)[-1])
                real = tf.reduce_sum(one_hot * logits, axis=-1)
                other = tf.reduce_max((1.0 - one_hot) * logits - one_hot * 10_000.0, axis=-1)
                margin = other - real if targeted else real - other
                loss = l2 + const * tf.maximum(0.0, margin + confidence)
                total = tf.reduce_sum(loss)
            gradient = tape.gradient(total, w)
            if abort_early and i % check_every == 0:
                active = tf.logical_and(active, loss <= previous * 0.9999)
                previous = tf.where(active, loss, previous)
                if not tf.reduce_any(active):
                    break
            improved = tf.logical_and(active, successful(logits, labels))
            succeeded = tf.logical_or(succeeded, improved)
            closer = tf.logical_and(improved, l2 < best_l2)
            best_l2 = tf.where(closer, l2, best_l2)
            best = tf.where(closer[:, None, None, None], image, best)
            # Adam as TF1's AdamOptimizer, for the examples still optimising.
            t = tf.cast(i + 1, tf.float32)
            m_new = _ADAM_BETA1 * m + (1.0 - _ADAM_BETA1) * gradient
            v_new = _ADAM_BETA2 * v + (1.0 - _ADAM_BETA2) * tf.square(gradient)
            rate = learning_rate * tf.sqrt(1.0 - _ADAM_BETA2**t) / (1.0 - _ADAM_BETA1**t)
            update = active[:, None, None, None]
            w = tf.where(update, w - rate * m_new / (tf.sqrt(v_new) + _ADAM_EPSILON), w)
            m = tf.where(update, m_new, m)
            v = tf.where(update, v_new, v)
        return best_l2, best, succeeded

    return run
