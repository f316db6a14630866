"""L2 DeepFool (Moosavi-Dezfooli et al. 2016) with the cleverhans 3.x semantics the paper used.

cleverhans 4 (`cleverhans.tf2`) has no DeepFool, so this is a batched TF2 version
of cleverhans 3.x's `deepfool_attack`:
- untargeted, away from the model's own prediction on the original image;
- the candidates are the top `nb_candidate` classes of the logits at the
  current point (the first is the current, still original, class);
- each step moves to the closest linearised boundary,
  `r = (|f_k| + 1e-5) * w_k / ||w_k||^2`, and adds to the total `r_tot`;
- the label is checked at `clip(x + r_tot)`; an example whose label changed
  takes no further step; after at most `max_iter` steps the result is
  `clip(x + (1 + overshoot) * r_tot)`.
The authors' code and foolbox differ slightly: 1e-4 instead of 1e-5, candidates
fixed from the original logits, the label checked with the overshoot applied.
Each step takes one batched jacobian of the candidates' logits, for the examples
still to fool only; its memory grows with nb_candidate times the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn
from attacks.kinds import MinimalPerturbationAttack, check_count, check_number
from defense.common.errors import ParameterError

# cleverhans adds this to |f_k| so that a point on the boundary still moves.
_MIN_STEP = 1e-5


class DeepFool(MinimalPerturbationAttack):
    """Untargeted L2 DeepFool, clipped to [CLIP_MIN, CLIP_MAX] (cleverhans 3.x semantics).

    Hyper-parameters:
        nb_candidate: Classes considered, the current one included (top logits).
        overshoot: Overshoot of the final step, (1 + overshoot) * r_tot.
        max_iter: Iterations at most.
    """

    # cleverhans 3.x's DeepFool is untargeted and moves away from the model's own
    # prediction: it takes labels like every attack, and may be called without them.
    targetable = False
    uses_labels = False

    def __init__(
        self, *, nb_candidate: int = 10, overshoot: float = 0.02, max_iter: int = 50
    ) -> None:
        check_count("nb_candidate", nb_candidate, 2)
        check_number("overshoot", overshoot, 0)
        check_count("max_iter", max_iter, 1)
        self.nb_candidate = nb_candidate
        self.overshoot = overshoot
        self.max_iter = max_iter
        # The compiled iteration per model, built once: a new tf.function at every
        # call would trace again at every call (a per-example loop, once per example).
        self._loops: dict[
            LogitsFn, Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
        ] = {}

    def run(
        self, target: LogitsFn, images: tf.Tensor, labels: tf.Tensor | None, *, targeted: bool
    ) -> tf.Tensor:
        """DeepFool examples for `images`, away from the model's own predictions (the
        labels are not used)."""
        adversarial, _ = self.with_steps(target, images)
        return adversarial

    def with_steps(self, logits_fn: LogitsFn, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """DeepFool examples and, per example, how many steps it took (int32 [N]).

        An example counts max_iter steps when its label never changed.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        num_classes = int(logits_fn(images[:1]).shape[-1])
        if self.nb_candidate > num_classes:
            raise ParameterError(
                f"nb_candidate={self.nb_candidate} exceeds the {num_classes} classes",
                "nb_candidate",
            )
        if logits_fn not in self._loops:
            self._loops[logits_fn] = _deepfool_loop(logits_fn, self.nb_candidate, self.max_iter)
        return self._loops[logits_fn](images, tf.constant(self.overshoot))


def _deepfool_loop(
    logits_fn: LogitsFn, nb_candidate: int, max_iter: int
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The batched DeepFool iteration as a tf.function for this model."""

    def closest_boundary(x: tf.Tensor, original: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per example of x: whether its label changed, and the step to the closest boundary."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = logits_fn(x)
            top = tf.math.top_k(logits, k=nb_candidate).values
        changed = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), original)
        gradients = tape.batch_jacobian(top, x)  # [n, candidates, H, W, C]
        w = gradients[:, 1:] - gradients[:, :1]
        f = top[:, 1:] - top[:, :1]
        norms = tf.norm(tf.reshape(w, [tf.shape(w)[0], nb_candidate - 1, -1]), axis=-1)
        distances = tf.where(norms > 0, (tf.abs(f) + _MIN_STEP) / norms, float("inf"))
        closest = tf.argmin(distances, axis=1, output_type=tf.int32)
        f_k = tf.gather(f, closest, batch_dims=1)
        w_k = tf.gather(w, closest, batch_dims=1)
        norm_k = tf.gather(norms, closest, batch_dims=1)
        scale = tf.math.divide_no_nan(tf.abs(f_k) + _MIN_STEP, tf.square(norm_k))
        return changed, scale[:, None, None, None] * w_k

    @tf.function
    def run(images: tf.Tensor, overshoot: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        original = tf.argmax(logits_fn(images), axis=-1, output_type=tf.int32)
        r_tot = tf.zeros_like(images)
        steps = tf.zeros_like(original)
        active = tf.ones_like(original, dtype=tf.bool)
        for _ in tf.range(max_iter):
            # Only the examples whose label has not changed yet are evaluated and moved.
            index = tf.where(active)
            point = tf.clip_by_value(tf.gather_nd(images + r_tot, index), CLIP_MIN, CLIP_MAX)
            changed, r = closest_boundary(point, tf.gather_nd(original, index))
            active = tf.tensor_scatter_nd_update(active, index, tf.logical_not(changed))
            if not tf.reduce_any(active):
                break
            r_tot = tf.tensor_scatter_nd_add(
                r_tot, index, tf.where(changed[:, None, None, None], 0.0, r)
            )
            steps = tf.tensor_scatter_nd_add(steps, index, 1 - tf.cast(changed, tf.int32))
        return tf.clip_by_value(images + (1 + overshoot) * r_tot, CLIP_MIN, CLIP_MAX), steps

    return run
