"""How much faster the batched attacks are than their un-batched equivalents, side by side.

Each comparison runs the same work both ways in one process, after warm-up calls
so that tf.function tracing is not counted, and forces the results (`.numpy()`)
inside the timed region so that asynchronous execution is counted:
- EOT-PGD: one EOT gradient of all K patterns of a batch (`RandomizedDefense.
  loss_gradient(samples=K)`, the defense's chunks) against K single-pattern
  gradients averaged in a Python loop, as a naive EOT implementation takes them;
- APGD-EOT: one step's objective over K samples (`attacks.apgd.eot_objective`, the
  defense's `eot_estimate`: loss, gradient and scores, forward and backward, in the
  defense's chunks) against K single-sample steps' objectives, one per call;
- DeepFool and C&W L2: one run on the whole batch against one run per example.

Both ways call the attacks as users do; an attack keeps its compiled iteration per
model, so the warm-up traces both shapes and the timed calls do not trace.

`scripts/benchmark_defense.py --attacks` prints these comparisons.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import tensorflow as tf

from attacks import LogitsFn
from attacks.apgd import eot_objective
from attacks.carlini_wagner import CarliniWagnerL2
from attacks.deepfool import DeepFool
from attacks.kinds import check_count
from defense.common.errors import ParameterError
from defense.randomized_defense import RandomizedDefense, equal_chunks

# A batched or looped way of one comparison: runs once, returns what forces its work.
_Run = Callable[[], tf.Tensor]


@dataclass(frozen=True)
class SpeedComparison:
    """The seconds of a batched computation and of its un-batched equivalent."""

    name: str
    batched_s: float
    looped_s: float
    detail: str

    @property
    def ratio(self) -> float:
        """The speed-up of the batched way: looped seconds over batched seconds."""
        return self.looped_s / self.batched_s


def _best_seconds(run: _Run, repeats: int) -> float:
    """The fastest of `repeats` timed runs, each forced to completion with `.numpy()`.

    The minimum, as timeit reports: the run least disturbed by the rest of the machine.
    """
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - start)
    return best


def _check_batch(images: tf.Tensor) -> int:
    """The batch size of NHWC `images`, which must hold at least one image."""
    if images.shape.rank != 4 or not images.shape[0]:
        raise ValueError(f"need a non-empty NHWC batch, got shape {images.shape}")
    return int(images.shape[0])


def looped_eot_gradient(
    defense: RandomizedDefense, images: tf.Tensor, labels: tf.Tensor, samples: int
) -> tf.Tensor:
    """The EOT gradient as a naive implementation takes it: the mean of `samples`
    single-pattern gradients (`loss_gradient(samples=1)`), one per Python iteration."""
    total = tf.zeros_like(images)
    for _ in range(samples):
        total += defense.loss_gradient(images, labels, samples=1)
    return total / samples


def per_example(attack: Callable[..., tf.Tensor], images: tf.Tensor, *args: Any) -> tf.Tensor:
    """`attack(images[i:i+1], *(a[i:i+1] for a in args))` for each example, concatenated:
    the attack un-batched."""
    return tf.concat(
        [
            attack(images[i : i + 1], *(a[i : i + 1] for a in args))
            for i in range(int(images.shape[0]))
        ],
        axis=0,
    )


def _compare(name: str, batched: _Run, looped: _Run, detail: str, repeats: int) -> SpeedComparison:
    """Warm both ways up once (tracing, first-call allocations), then time each."""
    batched().numpy()
    looped().numpy()
    return SpeedComparison(
        name, _best_seconds(batched, repeats), _best_seconds(looped, repeats), detail
    )


def compare_eot_gradient(
    defense: RandomizedDefense,
    images: npt.ArrayLike | tf.Tensor,
    labels: npt.ArrayLike | tf.Tensor,
    *,
    samples: int = 30,
    repeats: int = 3,
) -> SpeedComparison:
    """EOT-PGD's step cost: one `samples`-pattern EOT gradient of the batch, against
    `samples` single-pattern gradients averaged in a loop (different patterns, the
    same estimator)."""
    check_count("samples", samples, 1)
    check_count("repeats", repeats, 1)
    images = tf.convert_to_tensor(images, tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int64)
    count = _check_batch(images)
    chunks, per_chunk = equal_chunks(samples, defense.chunk_size)
    return _compare(
        f"EOT-PGD, K={samples} patterns",
        lambda: defense.loss_gradient(images, labels, samples=samples),
        lambda: looped_eot_gradient(defense, images, labels, samples),
        f"one gradient of all {samples} patterns x {count} images ({chunks} chunk(s) of "
        f"{per_chunk} patterns) vs {samples} single-pattern gradients of {count} images; "
        f"best of {repeats}, tracing excluded",
        repeats,
    )


def looped_apgd_eot_step(
    defense: RandomizedDefense, images: tf.Tensor, labels: tf.Tensor, samples: int
) -> tf.Tensor:
    """`samples` single-sample APGD-EOT objectives (one pattern each, one call each),
    their gradients summed so that every call's work is used."""
    objective = eot_objective(defense, 1, dlr=False, targeted=False)
    total = tf.zeros_like(images)
    for _ in range(samples):
        total += objective(images, labels)[1]
    return total


def compare_apgd_eot_step(
    defense: RandomizedDefense,
    images: npt.ArrayLike | tf.Tensor,
    labels: npt.ArrayLike | tf.Tensor,
    *,
    samples: int = 20,
    repeats: int = 3,
) -> SpeedComparison:
    """APGD-EOT's step cost (cross-entropy, untargeted): one `samples`-sample objective
    of the batch (`eot_objective`, the defense's chunks), against `samples` single-sample
    steps' objectives: what taking a step's samples together saves over a step per sample."""
    check_count("samples", samples, 1)
    check_count("repeats", repeats, 1)
    images = tf.convert_to_tensor(images, tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int64)
    count = _check_batch(images)
    chunks, per_chunk = equal_chunks(samples, defense.chunk_size)
    objective = eot_objective(defense, samples, dlr=False, targeted=False)
    return _compare(
        f"APGD-EOT step, {samples} samples",
        lambda: objective(images, labels)[1],
        lambda: looped_apgd_eot_step(defense, images, labels, samples),
        f"one step of {samples} samples x {count} images ({chunks} chunk(s) of {per_chunk} "
        f"patterns) vs {samples} single-sample steps of {count} images; best of {repeats}, "
        "tracing excluded",
        repeats,
    )


def compare_deepfool(
    logits_fn: LogitsFn,
    images: npt.ArrayLike | tf.Tensor,
    *,
    repeats: int = 1,
    **hyper: Any,
) -> SpeedComparison:
    """DeepFool (`DeepFool(**hyper)`) on the whole batch, against one run per example."""
    check_count("repeats", repeats, 1)
    attack = DeepFool(**hyper)
    images = tf.convert_to_tensor(images, tf.float32)
    count = _check_batch(images)

    def deepfool(batch: tf.Tensor) -> tf.Tensor:
        return attack(logits_fn, batch)

    return _compare(
        f"DeepFool, batch of {count}",
        lambda: deepfool(images),
        lambda: per_example(deepfool, images),
        f"one DeepFool run on {count} images vs {count} runs on 1 image (max_iter="
        f"{attack.max_iter}, nb_candidate={attack.nb_candidate}); best of {repeats}, "
        "tracing excluded",
        repeats,
    )


def compare_carlini_wagner(
    logits_fn: LogitsFn,
    images: npt.ArrayLike | tf.Tensor,
    labels: npt.ArrayLike | tf.Tensor,
    *,
    repeats: int = 1,
    **hyper: Any,
) -> SpeedComparison:
    """Untargeted C&W L2 (`CarliniWagnerL2(**hyper)`) on the whole batch, against one
    run per example."""
    check_count("repeats", repeats, 1)
    attack = CarliniWagnerL2(**hyper)
    images = tf.convert_to_tensor(images, tf.float32)
    labels = tf.convert_to_tensor(labels)
    count = _check_batch(images)
    if labels.shape != images.shape[:1]:
        raise ParameterError(
            f"need one label per image, got {labels.shape} for {images.shape}", "labels"
        )

    def carlini_wagner(batch: tf.Tensor, batch_labels: tf.Tensor) -> tf.Tensor:
        return attack(logits_fn, batch, batch_labels)

    return _compare(
        f"C&W L2, batch of {count}",
        lambda: carlini_wagner(images, labels),
        lambda: per_example(carlini_wagner, images, labels),
        f"one C&W run on {count} images vs {count} runs on 1 image (max_iterations="
        f"{attack.max_iterations}, binary_search_steps={attack.binary_search_steps}); "
        f"best of {repeats}, tracing excluded",
        repeats,
    )
