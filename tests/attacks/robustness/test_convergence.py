"""Convergence marking (a pure function), the gradient sanity check and the unbounded
budget sweep on the digits CNN, and the checks of their parameters."""

import math

import numpy as np
import pytest

from attacks.robustness.convergence import (
    budget_sweep,
    converged_index,
    gradient_cosine,
    samples_sweep,
)
from defense.common.errors import ParameterError


@pytest.mark.parametrize(
    ("accuracies", "index"),
    [
        ([0.5, 0.3, 0.2, 0.195, 0.192], 2),  # every later point within 0.01 of 0.2
        ([0.5, 0.5, 0.5], 0),
        ([0.5, 0.3, 0.1], None),  # still falling: not converged
        ([0.3, 0.3, 0.3, 0.1], None),  # a plateau, then a drop: not converged
        ([0.3, 0.3, 0.25, 0.25], 2),
        ([0.2], None),  # nothing larger was tried
        ([0.40, 0.405, 0.39], None),  # 0.39 is 0.01 from 0.40, 0.015 from 0.405
        ([0.40, 0.405, 0.398], 0),
    ],
)
def test_converged_index(accuracies, index):
    assert converged_index(accuracies, 0.01) == index


def test_converged_index_tolerance():
    assert converged_index([0.5, 0.45, 0.44], 0.1) == 0
    assert converged_index([0.5, 0.45, 0.44], 0.02) == 1


@pytest.mark.parametrize("tolerance", [0, -0.01, math.inf, math.nan, True])
def test_tolerance_must_be_finite_positive(tolerance):
    with pytest.raises(ParameterError) as error:
        converged_index([0.5, 0.4], tolerance)
    assert error.value.parameters == ("tolerance",)


def test_gradient_cosine_rises_with_samples(digits, small_defense, sample):
    images, labels = (a[:16] for a in sample)
    cosines = dict(
        gradient_cosine(digits.model, small_defense, images, labels, samples=(1, 20), seed=3)
    )
    # About 0.76 at K = 1 and 0.97 at K = 20.
    assert cosines[1] < cosines[20] - 0.05, cosines
    assert cosines[20] > 0.8


def test_unbounded_sweep_reaches_zero(digits, small_defense, sample, tiny_budget):
    images, labels = (a[:8] for a in sample)
    sweep = budget_sweep(
        digits.model, small_defense, images, labels, tiny_budget,
        epsilons=(2, 128, 255), seed=1, judge_seed=2,
    )  # fmt: skip
    assert sweep.accuracies[0].mean > 0
    assert sweep.accuracies[-1].mean == 0
    # Stopped at the first epsilon with accuracy 0: 255 was not needed.
    assert sweep.values == (2.0, 128.0)
    assert sweep.converged_at is None


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: budget_sweep(None, None, None, None, None, epsilons=(), seed=0, judge_seed=0),
         "epsilons"),
        (lambda: budget_sweep(None, None, None, None, None, epsilons=(8, 300), seed=0,
                              judge_seed=0), "epsilons"),
        (lambda: budget_sweep(None, None, None, None, None, epsilons=(16, 8), seed=0,
                              judge_seed=0), "epsilons"),
        (lambda: samples_sweep(None, None, None, None, None, samples=(1, 0), seed=0,
                               judge_seed=0), "samples"),
        (lambda: samples_sweep(None, None, None, None, None, tolerance=0, seed=0, judge_seed=0),
         "tolerance"),
        (lambda: gradient_cosine(None, None, None, None, samples=(), seed=0), "samples"),
    ],
)  # fmt: skip
def test_bad_sweep_parameters(call, parameter):
    """Refused before any model runs (no model is given)."""
    with pytest.raises(ParameterError) as error:
        call()
    assert error.value.parameters == (parameter,)


def test_sweeps_are_reproducible(digits, small_defense, sample, tiny_budget):
    images, labels = (a[:8] for a in sample)
    runs = [
        samples_sweep(
            digits.model, small_defense, images, labels, tiny_budget,
            samples=(1, 2), seed=5, judge_seed=6,
        )
        for _ in range(2)
    ]  # fmt: skip
    assert runs[0] == runs[1]
    assert np.all([0 <= a.mean <= 1 for a in runs[0].accuracies])
