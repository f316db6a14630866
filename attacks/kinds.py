"""The attack base class, its two kinds (as foolbox separates them), and the checks of
hyper-parameters.

An attack is a subclass of one kind: its keyword-only `__init__` is the one table
of its hyper-parameters (defaults and validation, so a bad value fails before any
model runs), its `run` the attack itself. Calling it is the base class's
`Attack.__call__`, the same for every attack: it checks the inputs and the target,
runs the attack and bounds its result by the kind. A fixed-budget attack (FGSM,
PGD, EOT-PGD) searches within a given L-infinity ball of `epsilon` pixel units,
onto which its result is projected; a minimal-perturbation attack (DeepFool, C&W)
looks for the smallest perturbation that fools the model, and is bounded only
where its result is clipped (the competition's `max_epsilon`).

Importable without TensorFlow (the catalog reads the kinds' names without it):
TensorFlow is imported when an attack is called.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, final

import numpy as np
import numpy.typing as npt

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from defense.common.errors import ParameterError

if TYPE_CHECKING:
    import tensorflow as tf

    from defense.randomized_defense import RandomizedDefense

# What an attack optimises against: a logits function, or the randomized defense.
Target: TypeAlias = "LogitsFn | RandomizedDefense"

FIXED_BUDGET, MINIMAL_PERTURBATION = "fixed-budget", "minimal-perturbation"
# How far outside [CLIP_MIN, CLIP_MAX] input images may stray (float rounding).
RANGE_TOLERANCE = 1e-5


class Attack(abc.ABC):
    """An attack: made with its hyper-parameters, called on a target and a batch.

    Subclasses derive from one kind (`FixedBudgetAttack`, `MinimalPerturbationAttack`)
    and implement `run` only; `__call__` is final. What a subclass may declare, as
    class attributes the catalog reads from its source (`attacks.declarations`):
        targetable: False where the attack cannot be targeted (DeepFool).
        uses_labels: False where the labels are only checked, not used (DeepFool
            moves away from the model's own prediction); such an attack may be
            called without labels.
        on_defense: True where the attack needs the randomized defense itself
            (EOT-PGD), which it then refuses any other target for.
    """

    kind: ClassVar[str]
    targetable: ClassVar[bool] = True
    uses_labels: ClassVar[bool] = True
    on_defense: ClassVar[bool] = False

    @final
    def __call__(
        self,
        target: Target,
        images: npt.ArrayLike | tf.Tensor,
        labels: npt.ArrayLike | tf.Tensor | None = None,
        *,
        targeted: bool = False,
        clip: bool = True,
    ) -> tf.Tensor:
        """Adversarial float32 images for `images` (final: subclasses implement `run`).

        Args:
            target: A logits function `x -> [N, classes]` (a Keras model or a
                scenario's `TargetModel.logits`), or for an attack on the defense
                (`on_defense`) a `defense.RandomizedDefense`. A RandomizedDefense
                made with `output="log_scores"` is a logits function of the defense
                and is attacked as one; one giving scores (the default) is refused
                by the attacks on logits, whose losses would read its
                probabilities as logits.
            images: Float NHWC batch in model input range [CLIP_MIN, CLIP_MAX].
            labels: One integer label per image: the true labels, or the targets
                when `targeted` (optional where `uses_labels` is False).
            targeted: Move towards `labels` instead of away from them.
            clip: Clip the result to [CLIP_MIN, CLIP_MAX] (a fixed-budget result
                is projected onto its epsilon ball either way); False shows the
                raw perturbation.
        """
        import tensorflow as tf

        self._check_target(target)
        images, labels = self._inputs(images, labels, targeted=targeted)
        adversarial = tf.convert_to_tensor(
            self.run(target, images, labels, targeted=targeted), tf.float32
        )
        adversarial = self._bound(images, adversarial)
        return tf.clip_by_value(adversarial, CLIP_MIN, CLIP_MAX) if clip else adversarial

    @abc.abstractmethod
    def run(
        self, target: Any, images: tf.Tensor, labels: tf.Tensor | None, *, targeted: bool
    ) -> tf.Tensor:
        """The attack on checked inputs: a target `__call__` accepted for this attack,
        float32 images, int64 labels (None only where `uses_labels` is False); the base
        class bounds the result."""

    def success(
        self,
        target: Target,
        adversarials: npt.ArrayLike | tf.Tensor,
        labels: npt.ArrayLike,
        *,
        targeted: bool = False,
    ) -> np.ndarray:
        """Per image, whether the attack succeeded on `target`: its label differs from
        `labels` (untargeted) or equals them (targeted), as `predictions` labels it."""
        return succeeded(predictions(target, adversarials), labels, targeted=targeted)

    def _bound(self, images: tf.Tensor, adversarial: tf.Tensor) -> tf.Tensor:
        """The result as the kind bounds it before clipping (unbounded here)."""
        return adversarial

    def _check_target(self, target: object) -> None:
        """Refuse a target this attack cannot optimise against."""
        from defense.randomized_defense import RandomizedDefense

        name = type(self).__name__
        if self.on_defense:
            if not isinstance(target, RandomizedDefense):
                raise ParameterError(
                    f"{name} attacks the randomized defense: target must be a "
                    f"defense.RandomizedDefense, got {type(target).__name__}",
                    "target",
                )
        elif isinstance(target, RandomizedDefense) and target.output_kind != "log_scores":
            raise ParameterError(
                f"{name} attacks logits, and target is a RandomizedDefense giving scores: "
                "make it with output='log_scores' to attack its log-scores, or attack the "
                "defense with EOTPGD",
                "target",
            )
        elif not callable(target):
            raise ParameterError(
                f"target must be a logits function (images -> logits), got {type(target).__name__}",
                "target",
            )

    def _inputs(
        self, images: object, labels: object, *, targeted: bool
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """`images` as float32 and `labels` as int64 tensors, checked; refuse `targeted`
        where the attack cannot be targeted."""
        import tensorflow as tf

        name = type(self).__name__
        if targeted and not self.targetable:
            raise ParameterError(f"{name} is untargeted; targeted does not apply", "targeted")
        given = tf.convert_to_tensor(images)
        if not given.dtype.is_floating:
            raise ParameterError(
                f"images must be floats in model input range [{CLIP_MIN}, {CLIP_MAX}], "
                f"got {given.dtype.name} (see defense.common.images.to_model_input)",
                "images",
            )
        if given.shape.rank != 4 or given.shape[0] == 0:
            raise ParameterError(
                f"images must be a non-empty NHWC batch, got shape {given.shape}", "images"
            )
        checked = tf.cast(given, tf.float32)
        low, high = float(tf.reduce_min(checked)), float(tf.reduce_max(checked))
        finite = math.isfinite(low) and math.isfinite(high)
        if not (finite and CLIP_MIN - RANGE_TOLERANCE <= low <= high <= CLIP_MAX + RANGE_TOLERANCE):
            raise ParameterError(
                f"images must lie in model input range [{CLIP_MIN}, {CLIP_MAX}], got values "
                f"in [{low}, {high}]",
                "images",
            )
        if labels is None:
            if self.uses_labels:
                raise ParameterError(f"{name} needs labels, one per image", "labels")
            return checked, None
        label_tensor = tf.convert_to_tensor(labels)
        if not label_tensor.dtype.is_integer or label_tensor.shape != checked.shape[:1]:
            raise ParameterError(
                f"need one label per image, as integers; got {label_tensor.dtype.name} "
                f"{label_tensor.shape} for images {checked.shape}",
                "labels",
            )
        return checked, tf.cast(label_tensor, tf.int64)


class FixedBudgetAttack(Attack):
    """An attack within an L-infinity ball of `epsilon` pixel units, onto which its
    result is projected."""

    kind = FIXED_BUDGET
    epsilon: float

    def _bound(self, images: tf.Tensor, adversarial: tf.Tensor) -> tf.Tensor:
        """Within `epsilon` of `images`; a result already in the ball is left exactly as is
        (the bounds are `images -+ radius`, rounded as any `images + delta` is)."""
        import tensorflow as tf

        radius = pixels_to_model(self.epsilon)
        return tf.clip_by_value(adversarial, images - radius, images + radius)


class MinimalPerturbationAttack(Attack):
    """An attack for the smallest perturbation that changes the label, bounded only by
    clipping to the image range."""

    kind = MINIMAL_PERTURBATION


def predictions(target: Target, images: npt.ArrayLike | tf.Tensor) -> np.ndarray:
    """The labels `target` gives `images`: the argmax of its logits (of a
    RandomizedDefense: of its scores over fresh patterns, the defense's decision)."""
    import tensorflow as tf

    outputs: Any = target(tf.convert_to_tensor(images, tf.float32))
    return np.argmax(np.asarray(outputs), axis=-1)


def succeeded(
    predicted: npt.ArrayLike, labels: npt.ArrayLike, *, targeted: bool = False
) -> np.ndarray:
    """Per image, whether `predicted` is an attack's success: a label other than `labels`
    (untargeted), or the target label `labels` (targeted)."""
    hit = np.asarray(predicted) == np.asarray(labels)
    return hit if targeted else ~hit


def check_number(
    name: str,
    value: float,
    low: float,
    *,
    strictly: bool = False,
    high: float | None = None,
) -> None:
    """`value` must be a finite number >= `low` (> with `strictly`) and <= `high`; NaN
    compares false with everything, so it is refused explicitly."""
    ok = not isinstance(value, bool) and math.isfinite(value) and value >= low
    ok = ok and not (strictly and value == low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if strictly else '>='} {low}"
        if high is not None:
            bound += f" and <= {high}"
        raise ParameterError(f"{name} must be a finite number {bound}, got {value}", name)


def check_count(name: str, value: int, low: int) -> None:
    """`value` must be an integer >= `low` (a step or sample count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r}", name)
    if value < low:
        raise ParameterError(f"{name} must be >= {low}, got {value}", name)


def check_epsilon(epsilon: float, name: str = "epsilon") -> None:
    """An L-infinity budget in pixel units: in (0, 255]."""
    if not (math.isfinite(epsilon) and 0 < epsilon <= 255):
        raise ParameterError(f"{name} must be in (0, 255] pixel units, got {epsilon}", name)


def check_linf_budget(epsilon: float, step_size: float, steps: int) -> None:
    """An iterative L-infinity budget in pixel units: steps of step_size within epsilon."""
    check_epsilon(epsilon)
    if not (math.isfinite(step_size) and 0 < step_size <= epsilon):
        raise ParameterError(
            f"step_size must be in (0, epsilon={epsilon}], got {step_size}", "step_size", "epsilon"
        )
    check_count("steps", steps, 1)
