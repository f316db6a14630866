"""The robustness card of the digits CNN at tiny settings: RobustBench's field names, a
JSON round trip, the Markdown, and the checks of `evaluate_robustness`."""

import dataclasses
import json
import math

import numpy as np
import pytest

from attacks.robustness.card import Card, evaluate_robustness
from attacks.robustness.protocol import ATTACKS
from defense.common.errors import ParameterError


def test_json_has_robustbench_fields_and_round_trips(card):
    text = card.to_json()
    fields = json.loads(text)
    assert fields["eps"] == "16/255"
    assert fields["number_forward_passes"] == 4
    assert float(fields["clean_acc"]) == pytest.approx(100 * card.clean.mean, abs=0.005)
    autoattack = card.attack("autoattack_rand").accuracy.mean
    assert float(fields["autoattack_acc"]) == pytest.approx(100 * autoattack, abs=0.005)
    assert Card.from_json(text) == card
    assert fields["robustness_card"]["versions"]["tensorflow"]


def test_card_contents(card):
    assert [result.name for result in card.attacks] == list(ATTACKS)
    assert card.seed == 0 and card.images == 10 and card.budget.redraws == 2
    assert card.clean.mean >= 0.9
    autoattack = card.attack("autoattack_rand")
    # (iterations + 1) * samples per APGD run, two runs, plus 2 redraws of 4 patterns.
    assert autoattack.backward_passes == 2 * 4 * 2
    assert autoattack.forward_passes == 2 * 4 * 2 + 2 * 4
    assert card.strongest.mean <= min(result.accuracy.mean for result in card.attacks) + 0.2
    assert card.samples_sweep.values == (1.0, 2.0)
    assert card.iterations_sweep.values == (2.0, 4.0)
    assert [k for k, _ in card.gradient_cosine] == [1, 4]
    assert card.budget_sweep.accuracies[-1].mean == 0
    assert card.checkpoint_sha256 == "ab" * 32


def test_markdown(card):
    text = card.to_markdown()
    for heading in ("## Accuracy", "## Convergence of APGD-EOT", "## Gradient sanity"):
        assert heading in text
    assert "| autoattack_rand |" in text and "| clean |" in text
    for sweep in (card.samples_sweep, card.iterations_sweep):
        if sweep.converged_at is None:
            assert f"**Not converged**: no {sweep.parameter}" in text
        else:
            assert f"Converged at {sweep.parameter} = {sweep.converged_at:g}" in text
    assert "Reaches 0 % at epsilon" in text


def test_not_converged_is_stated_plainly(card):
    stalled = dataclasses.replace(
        card, samples_sweep=dataclasses.replace(card.samples_sweep, converged_at=None)
    )
    assert "**Not converged**: no samples from which" in stalled.to_markdown()


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 255.5}, "epsilon"),
        ({"redraws": 0}, "redraws"),
        ({"iterations": -1}, "iterations"),
        ({"tolerance": math.inf}, "tolerance"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"sweep_samples": (0,)}, "sweep_samples"),
        ({"epsilons": (8, 512)}, "epsilons"),
        ({"labels": np.full(10, 10)}, "labels"),
    ],
)
def test_bad_parameters(digits, small_defense, sample, tiny_card, changes, parameter):
    images, labels = (a[:10] for a in sample)
    arguments = {"images": images, "labels": labels, **tiny_card, **changes}
    with pytest.raises(ParameterError) as error:
        evaluate_robustness(digits.model, small_defense, **arguments)
    assert error.value.parameters == (parameter,)
