"""Whether the card's attack has converged, and whether its gradient is sane.

- Sweeps of APGD-EOT's robust accuracy over EOT samples and over iterations, each
  marking the point from which a larger budget no longer moves the accuracy by
  `tolerance` (`converged_index`), or "not converged" when no such point exists;
- the cosine similarity of two independent K-sample EOT gradients, rising with K
  when the EOT estimate is a consistent gradient (not noise, not obfuscated);
- a budget sweep over epsilon up to 255 pixel units: an unbounded attack must
  bring the accuracy to 0, else the attack (not the defense) is failing.
Each point's attack seed is derived from the sweep and the point; all points are
judged with the same judgement seed (the same patterns), so that differences
between points are the attack's, not the draws'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from attacks.kinds import check_count, check_epsilon
from attacks.robustness.judgement import Accuracy, Redraws, derive_seed, redraw_accuracy
from attacks.robustness.protocol import Budget, apgd_eot
from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from defense.randomized_defense import RandomizedDefense

SAMPLES = (1, 2, 5, 10, 20, 50)
ITERATIONS = (10, 25, 50, 100, 200)
EPSILONS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 255.0)
TOLERANCE = 0.01


@dataclass(frozen=True)
class Sweep:
    """Robust accuracy of APGD-EOT as one budget parameter grows.

    converged_at: the first value from which every larger value moves the mean
    accuracy by less than the tolerance; None: not converged (or not asked).
    """

    parameter: str
    values: tuple[float, ...]
    accuracies: tuple[Accuracy, ...]
    converged_at: float | None = None


def check_tolerance(tolerance: float) -> None:
    """A tolerance is a finite positive accuracy difference."""
    if isinstance(tolerance, bool) or not (math.isfinite(tolerance) and tolerance > 0):
        raise ParameterError(f"tolerance must be finite and > 0, got {tolerance}", "tolerance")


def check_counts(name: str, values: Sequence[int]) -> None:
    """A non-empty sequence of positive counts (EOT samples, iterations)."""
    if len(values) == 0:
        raise ParameterError(f"{name} must not be empty", name)
    for value in values:
        check_count(name, value, 1)


def check_epsilons(epsilons: Sequence[float]) -> None:
    """A non-empty ascending sequence of budgets in (0, 255] pixel units."""
    if len(epsilons) == 0:
        raise ParameterError("epsilons must not be empty", "epsilons")
    for epsilon in epsilons:
        check_epsilon(epsilon, "epsilons")
    if list(epsilons) != sorted(epsilons):
        raise ParameterError(f"epsilons must be ascending, got {list(epsilons)}", "epsilons")


def converged_index(accuracies: Sequence[float], tolerance: float) -> int | None:
    """The first index from which every later accuracy differs by less than `tolerance`
    (a larger budget no longer changes the result); None when there is none. The last
    point alone proves nothing: nothing larger was tried."""
    check_tolerance(tolerance)
    values = np.asarray(accuracies, float)
    for i in range(len(values) - 1):
        if np.all(np.abs(values[i + 1 :] - values[i]) < tolerance):
            return i
    return None


def sweep_budget(parameter: str, value: float, budget: Budget) -> Budget:
    """`budget` with one sweep parameter ("samples", "iterations" or "epsilon") set to
    `value` (an epsilon point takes its own default step)."""
    if parameter == "samples":
        return dataclasses.replace(budget, samples=int(value))
    if parameter == "iterations":
        return dataclasses.replace(budget, iterations=int(value))
    if parameter == "epsilon":
        return dataclasses.replace(budget, epsilon=float(value), step_size=None)
    raise ParameterError(
        f"parameter must be samples, iterations or epsilon, got {parameter!r}", "parameter"
    )


def sweep_point(
    parameter: str,
    value: float,
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
    judge_seed: int,
) -> Redraws:
    """APGD-EOT at `budget` with `parameter` set to `value` (its seed derived from `seed`,
    the parameter and the value), judged over redraws from `judge_seed`."""
    point = sweep_budget(parameter, value, budget)
    point_seed = derive_seed(seed, parameter, value)
    adversarials = apgd_eot(model, config, images, labels, point, seed=point_seed)
    return redraw_accuracy(
        model,
        config,
        adversarials,
        labels,
        redraws=point.redraws,
        seed=judge_seed,
        chunk_size=point.judge_chunk_size,
    )


def sweep(
    parameter: str, values: Sequence[float], accuracies: Sequence[Accuracy], tolerance: float | None
) -> Sweep:
    """The sweep of `accuracies` at `values`, its converged point marked when `tolerance`
    is given."""
    done = tuple(float(value) for value in values)
    index = None
    if tolerance is not None:
        index = converged_index([accuracy.mean for accuracy in accuracies], tolerance)
    return Sweep(parameter, done, tuple(accuracies), None if index is None else done[index])


def _sweep(
    parameter: str,
    values: Sequence[float],
    budget: Budget,
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    judge_seed: int,
    tolerance: float | None,
    stop_at_zero: bool = False,
) -> Sweep:
    """APGD-EOT's accuracy at each value (`sweep_point`); with `stop_at_zero`, no larger
    value after accuracy 0."""
    accuracies: list[Accuracy] = []
    for value in values:
        judged = sweep_point(
            parameter,
            value,
            model,
            config,
            images,
            labels,
            budget,
            seed=seed,
            judge_seed=judge_seed,
        )
        accuracies.append(judged.summary())
        if stop_at_zero and judged.accuracy_mean == 0:
            break
    return sweep(parameter, values[: len(accuracies)], accuracies, tolerance)


def samples_sweep(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    samples: Sequence[int] = SAMPLES,
    tolerance: float = TOLERANCE,
    seed: int,
    judge_seed: int,
) -> Sweep:
    """Robust accuracy over EOT samples per step, at `budget`'s epsilon and iterations."""
    check_counts("samples", samples)
    check_tolerance(tolerance)
    return _sweep(
        "samples",
        samples,
        budget,
        model,
        config,
        images,
        labels,
        seed=seed,
        judge_seed=judge_seed,
        tolerance=tolerance,
    )


def iterations_sweep(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    iterations: Sequence[int] = ITERATIONS,
    tolerance: float = TOLERANCE,
    seed: int,
    judge_seed: int,
) -> Sweep:
    """Robust accuracy over iterations, at `budget`'s epsilon and EOT samples."""
    check_counts("iterations", iterations)
    check_tolerance(tolerance)
    return _sweep(
        "iterations",
        iterations,
        budget,
        model,
        config,
        images,
        labels,
        seed=seed,
        judge_seed=judge_seed,
        tolerance=tolerance,
    )


def budget_sweep(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    epsilons: Sequence[float] = EPSILONS,
    seed: int,
    judge_seed: int,
) -> Sweep:
    """Robust accuracy over epsilon (pixel units, ascending, up to 255), stopping once it
    reaches 0: an unbounded attack that never gets there is not working."""
    check_epsilons(epsilons)
    return _sweep(
        "epsilon",
        epsilons,
        budget,
        model,
        config,
        images,
        labels,
        seed=seed,
        judge_seed=judge_seed,
        tolerance=None,
        stop_at_zero=True,
    )


def image_cosines(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    k: int,
    seed: int,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Per image [N], the cosine similarity of two independent `k`-sample EOT gradients
    (fresh patterns from seeds derived from `seed`, `k` and the copy); a zero gradient
    (a saturated loss) agrees with nothing: 0, not NaN."""
    check_count("k", k, 1)
    first, second = (
        RandomizedDefense(
            model, config, chunk_size=chunk_size, seed=derive_seed(seed, "cosine", k, copy)
        )
        .eot_estimate(images, labels, samples=k)
        .gradient
        for copy in (0, 1)
    )
    first, second = (tf.reshape(g, [g.shape[0], -1]) for g in (first, second))
    dot = tf.reduce_sum(first * second, axis=1)
    norms = tf.norm(first, axis=1) * tf.norm(second, axis=1)
    return np.asarray(tf.math.divide_no_nan(dot, norms), np.float64)


def gradient_cosine(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    samples: Sequence[int] = SAMPLES,
    seed: int,
    chunk_size: int | None = None,
) -> tuple[tuple[int, float], ...]:
    """Per K in `samples`, the cosine similarity of two independent K-sample EOT gradients
    (`image_cosines`), averaged over images: near 1 for a consistent gradient, near 0
    for noise."""
    check_counts("samples", samples)
    return tuple(
        (
            int(k),
            float(
                image_cosines(
                    model, config, images, labels, k=k, seed=seed, chunk_size=chunk_size
                ).mean()
            ),
        )
        for k in samples
    )
