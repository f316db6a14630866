"""The paper's central claims (Tables 1 and 2), reproduced on the trained digits CNN.

Vanilla scenario, as in Section 4: adversarial examples are made against the plain
model from test images it classifies correctly, and evaluated as floats (the
paper's near-0% target accuracies imply no rounding) on the plain model ("target
model") and on the randomized defense ("defense model": one random pattern per
image, three runs averaged). The DeepFool and C&W sets are the session's shared
ones; FGSM epsilons are scaled up for this small, fairly robust CNN.
"""

import numpy as np
import pytest
from digits import DEFENSE, INPUT_SIZE, OUT_SIZE, accuracy

from attacks.evaluation import evaluate
from attacks.fgsm import fgsm
from attacks.scenarios import build_scenario
from defense.ensemble import RandomizedEnsemble
from defense.randomization import make_generator

pytestmark = pytest.mark.slow

FGSM_EPSILONS = (8, 16, 24)
PAPER_DEFENSE = DEFENSE.replace(num_iterations=1)
RUNS = 3


def recovered(model, images, labels, fooled) -> float:
    """Share of the examples that fool the target model which the defense classifies right."""
    ensemble = RandomizedEnsemble(model, PAPER_DEFENSE, generator=make_generator(11))
    return float(
        np.mean([np.mean(ensemble.predict(images[fooled]) == labels[fooled]) for _ in range(RUNS)])
    )


@pytest.fixture(scope="module")
def table(digits, digits_target, deepfool_run, cw_run):
    """Table 2's rows: attack -> (accuracies, share of fooling examples the defense recovers)."""
    scenario = build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    images, labels = deepfool_run[:2]
    sets = {
        f"FGSM-{eps}": (images, labels, fgsm(digits_target, images, labels, epsilon=eps).numpy())
        for eps in FGSM_EPSILONS
    }
    sets["DeepFool"] = (images, labels, deepfool_run[2])
    sets["C&W"] = cw_run
    rows = {}
    print(f"\n{'attack':10s} {'images':>6s} {'target':>7s} {'defense':>8s} {'recovered':>10s}")
    for name, (_, truth, adversarial) in sets.items():
        accuracies = evaluate(
            digits.model, scenario, adversarial, truth, config=PAPER_DEFENSE, runs=RUNS, seed=7
        )
        fooled = np.argmax(digits_target(adversarial).numpy(), axis=1) != truth
        share = recovered(digits.model, adversarial, truth, fooled)
        rows[name] = (accuracies, share)
        print(
            f"{name:10s} {len(truth):6d} {accuracies.target:7.1%} {accuracies.defense:8.1%} "
            f"{share:10.1%}"
        )
    return rows


def test_randomization_barely_costs_clean_accuracy(digits):
    plain = accuracy(digits.model, digits.x_test, digits.y_test)
    ensemble = RandomizedEnsemble(digits.model, PAPER_DEFENSE, generator=make_generator(0))
    single = np.mean([np.mean(ensemble.predict(digits.x_test) == digits.y_test) for _ in range(3)])
    patterns = RandomizedEnsemble(digits.model, DEFENSE, seed=0).predict(digits.x_test)
    thirty = np.mean(patterns == digits.y_test)
    print(f"\nclean: plain {plain:.1%}, one pattern {single:.1%}, 30 patterns {thirty:.1%}")
    assert plain >= 0.93
    assert single >= plain - 0.03
    assert thirty >= plain - 0.03


def test_iterative_attacks_fool_the_target_but_not_the_defense(table):
    for name in ("DeepFool", "C&W"):
        accuracies, _ = table[name]
        assert accuracies.target <= 0.05, name
        assert accuracies.defense >= accuracies.target + 0.5, name


def test_fgsm_transfers_more_than_iterative_attacks(table):
    """FGSM's large perturbations survive randomization; DeepFool's and C&W's do not.

    Measured on the examples that fool the target model: the defense recovers far
    fewer of FGSM's (here 13-42%, fewer the larger epsilon) than of DeepFool's and
    C&W's (65-74%).
    """
    iterative = min(table["DeepFool"][1], table["C&W"][1])
    for eps in FGSM_EPSILONS:
        assert table[f"FGSM-{eps}"][1] <= iterative - 0.15, eps
