"""The two kinds of attack, as foolbox separates them, and the checks of their hyper-parameters.

A fixed-budget attack (FGSM, PGD, EOT-PGD) searches within a given L-infinity
ball of `epsilon` pixel units; a minimal-perturbation attack (DeepFool, C&W)
looks for the smallest perturbation that fools the model, and is bounded only
where its result is clipped (the competition's `max_epsilon`). An attack is a
class of one kind: its keyword-only `__init__` is the one table of its
hyper-parameters (defaults and validation, so a bad value fails before any model
runs), calling it attacks a batch. Importable without TensorFlow.
"""

from __future__ import annotations

import math
import numbers

from defense.common.errors import ParameterError

FIXED_BUDGET, MINIMAL_PERTURBATION = "fixed-budget", "minimal-perturbation"


class FixedBudgetAttack:
    """An attack within an L-infinity ball of `epsilon` pixel units."""

    kind = FIXED_BUDGET
    epsilon: float


class MinimalPerturbationAttack:
    """An attack for the smallest perturbation that changes the label."""

    kind = MINIMAL_PERTURBATION


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
