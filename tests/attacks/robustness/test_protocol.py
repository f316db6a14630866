"""The card's attacks on the digits CNN: APGD-CE with EOT against EOT-PGD at the same
budget, what the attacks cost, and the budget's checks."""

import math

import numpy as np
import pytest

from attacks import pixels_to_model
from attacks.robustness.judgement import Redraws, derive_seed, redraw_accuracy
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


def test_autoattack_rand_keeps_restarts_and_losses_by_the_redraw_judgement(monkeypatch):
    """Each run's output is marked by its (loss, restart); the stand-in judgement makes
    each image's strongest run known. autoattack_rand must return, per image, the run
    the judgement finds correct in fewest redraws, DLR only where CE left some redraw
    correct: not the first run, not one draw."""
    from attacks.robustness import protocol

    runs = {("ce", 0): 1.0, ("ce", 1): 2.0, ("dlr", 0): 3.0, ("dlr", 1): 4.0}
    # Per run and image, in how many of 4 redraws the image stays correct.
    counts = {1.0: [4, 0, 2, 3], 2.0: [1, 3, 2, 4], 3.0: [0, 9, 1, 4], 4.0: [2, 9, 0, 0]}
    calls = []

    def fake_apgd(model, config, images, labels, budget, *, seed, dlr=False):
        loss = "dlr" if dlr else "ce"
        restart = next(r for r in range(2) if derive_seed(7, f"apgd-{loss}", r) == seed)
        calls.append((loss, restart, list(labels)))
        return np.full_like(images, runs[loss, restart])

    def fake_judgement(model, config, candidates, labels, *, redraws, seed, chunk_size):
        assert seed == derive_seed(7, "select") and redraws == 4
        correct = np.zeros((redraws, len(labels)), bool)
        for column, (marker, label) in enumerate(zip(candidates[:, 0, 0, 0], labels, strict=True)):
            correct[: counts[float(marker)][label], column] = True
        return Redraws(correct)

    monkeypatch.setattr(protocol, "apgd_eot", fake_apgd)
    monkeypatch.setattr(protocol, "redraw_accuracy", fake_judgement)
    images, labels = np.zeros((4, 2, 2, 3), np.float32), np.arange(4)
    budget = Budget(redraws=4, restarts=2)
    found = protocol.autoattack_rand(None, None, images, labels, budget, seed=7)
    # CE: image 0 -> restart 1 (1 redraw), 1 -> restart 0 (0), 2 -> restart 0 (2, the
    # first on ties), 3 -> restart 0 (3). DLR on images 0, 2 and 3, against CE's pick:
    # 0 -> DLR restart 0 (0), 2 -> DLR restart 1 (0), 3 -> DLR restart 1 (0).
    assert found[:, 0, 0, 0].tolist() == [3.0, 1.0, 4.0, 4.0]
    assert calls == [("ce", 0, [0, 1, 2, 3]), ("ce", 1, [0, 1, 2, 3])] + [
        ("dlr", r, [0, 2, 3]) for r in range(2)
    ]


def test_passes_follow_the_budget():
    budget = Budget(iterations=100, samples=20)
    assert attack_passes("autoattack_rand", budget) == 2 * 101 * 20
    assert attack_passes("autoattack_rand", Budget(iterations=100, samples=20, restarts=3)) == (
        3 * 2 * 101 * 20
    )
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
        ({"restarts": 0}, "restarts"),
    ],
)
def test_bad_budgets(changes, parameter):
    with pytest.raises(ParameterError) as error:
        Budget(**changes)
    assert parameter in error.value.parameters
