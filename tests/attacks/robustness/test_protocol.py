"""The card's attacks on the digits CNN: APGD-CE with EOT against EOT-PGD at the same
budget, what the attacks cost, and the budget's checks."""

import math

import numpy as np
import pytest

from attacks import pixels_to_model
from attacks.robustness.judgement import redraw_accuracy
from attacks.robustness.protocol import ATTACKS, Budget, apgd_eot, attack_passes, eot_pgd
from defense.common.errors import ParameterError


def test_apgd_eot_at_least_as_strong_as_eot_pgd(digits, small_defense, sample, tiny_budget):
    """30 images, 16 pixel units, 10 iterations of 4 EOT samples, 3 redraws of the
    4-pattern defense: APGD-CE 0.33 mean accuracy (any-fooled 0.13), EOT-PGD 0.49 (0.37)."""
    images, labels = sample
    found = {}
    for name, attack in (("apgd", apgd_eot), ("eot_pgd", eot_pgd)):
        adversarials = attack(digits.model, small_defense, images, labels, tiny_budget, seed=1)
        assert np.abs(adversarials - images).max() <= pixels_to_model(16) + 1e-6
        found[name] = redraw_accuracy(
            digits.model, small_defense, adversarials, labels, redraws=3, seed=2, chunk_size=128
        )
    assert found["apgd"].accuracy_mean <= found["eot_pgd"].accuracy_mean
    assert found["apgd"].any_fooled_accuracy <= found["eot_pgd"].any_fooled_accuracy
    # The attacks do something at this budget, and leave something to compare.
    assert 0 < found["apgd"].accuracy_mean < 0.9


def test_passes_follow_the_budget():
    budget = Budget(iterations=100, samples=20)
    assert attack_passes("autoattack_rand", budget) == 2 * 101 * 20
    assert attack_passes("eot_pgd", budget) == 100 * 20
    assert attack_passes("pgd_without_eot", budget) == 100
    assert attack_passes("transfer_pgd", budget) == 100
    assert set(ATTACKS) >= {"autoattack_rand", "eot_pgd", "pgd_without_eot", "transfer_pgd"}


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 256}, "epsilon"),
        ({"epsilon": math.nan}, "epsilon"),
        ({"iterations": 0}, "iterations"),
        ({"samples": 0}, "samples"),
        ({"redraws": -2}, "redraws"),
        ({"step_size": 17}, "step_size"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_budgets(changes, parameter):
    with pytest.raises(ParameterError) as error:
        Budget(**changes)
    assert parameter in error.value.parameters
