"""The judgement over redraws: its statistics against a hand computation, its seeds, the
choice of the strongest candidate, and its checks."""

import dataclasses

import numpy as np
import pytest

from attacks.robustness.judgement import (
    Redraws,
    derive_seed,
    keep_strongest,
    redraw_accuracy,
)
from defense.common.errors import ParameterError
from defense.ensemble import RandomizedEnsemble
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

CLASSES, IMAGES = 11, 64
# One pattern per classification: the tiny model's labels then vary between draws.
ONE_PATTERN = dataclasses.replace(TINY_DEFENSE, num_iterations=1)


@pytest.fixture(scope="module")
def tiny():
    """A tiny classifier, noise images, and labels (one draw's) that other draws of some
    images disagree with."""
    model = tiny_classifier(CLASSES, kernel=3, logits_stddev=1.0)
    images = np.random.default_rng(0).uniform(-1, 1, (IMAGES, 12, 12, 3)).astype(np.float32)
    labels = RandomizedEnsemble(model, ONE_PATTERN, seed=0).predict(images)
    return model, images, labels


def test_statistics_by_hand():
    correct = np.array(
        [
            [True, True, False, True],
            [True, False, False, True],
            [True, True, True, True],
        ]
    )
    judged = Redraws(correct)
    # Per redraw 3/4, 2/4, 4/4: mean 0.75, population std sqrt(((0)^2 + .25^2 + .25^2) / 3).
    assert judged.accuracy_mean == pytest.approx(0.75)
    assert judged.accuracy_std == pytest.approx(np.sqrt(0.125 / 3))
    # Images 0 and 3 are correct in every redraw.
    assert judged.any_fooled_accuracy == pytest.approx(0.5)
    np.testing.assert_array_equal(judged.correct_counts, [3, 2, 1, 3])
    summary = judged.summary()
    assert (summary.mean, summary.any_fooled) == (judged.accuracy_mean, 0.5)


def test_redraws_are_the_deployed_defense_with_derived_seeds(tiny):
    model, images, labels = tiny
    judged = redraw_accuracy(model, ONE_PATTERN, images, labels, redraws=4, seed=7)
    by_hand = np.stack(
        [
            RandomizedEnsemble(model, ONE_PATTERN, seed=derive_seed(7, "redraw", r)).predict(images)
            == labels
            for r in range(4)
        ]
    )
    np.testing.assert_array_equal(judged.correct, by_hand)
    assert judged.correct.shape == (4, IMAGES)
    # Draws differ between redraws: some images are wrong in some redraws only.
    assert 0 < judged.accuracy_mean < 1
    assert judged.any_fooled_accuracy < judged.accuracy_mean
    assert judged.any_fooled_accuracy == np.mean(by_hand.all(axis=0))
    again = redraw_accuracy(model, ONE_PATTERN, images, labels, redraws=4, seed=7)
    np.testing.assert_array_equal(again.correct, judged.correct)


def test_derived_seeds_depend_on_the_unit_only():
    assert derive_seed(1, "redraw", 0) == derive_seed(1, "redraw", 0)
    seeds = {derive_seed(1, "redraw", r) for r in range(100)} | {derive_seed(2, "redraw", 0)}
    assert len(seeds) == 101
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_keep_strongest_takes_fewest_redraws_correct_first_on_ties():
    first, second = np.zeros((3, 2, 2, 3)), np.ones((3, 2, 2, 3))
    judged_first = Redraws(np.array([[True, True, False], [True, False, False]]))  # 2, 1, 0
    judged_second = Redraws(np.array([[False, True, False], [True, False, True]]))  # 1, 1, 1
    kept = keep_strongest([first, second], [judged_first, judged_second])
    np.testing.assert_array_equal(kept[:, 0, 0, 0], [1, 0, 0])


def test_keep_strongest_needs_one_judgement_per_candidate():
    with pytest.raises(ParameterError) as error:
        keep_strongest([np.zeros((2, 1, 1, 3))], [])
    assert "candidates" in error.value.parameters
    with pytest.raises(ParameterError, match="judge its candidate"):
        keep_strongest([np.zeros((2, 1, 1, 3))], [Redraws(np.ones((1, 3), bool))])


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"redraws": 0}, "redraws"),
        ({"redraws": -1}, "redraws"),
        ({"labels": np.full(IMAGES, CLASSES)}, "labels"),
        ({"labels": np.full(IMAGES, -1)}, "labels"),
        ({"labels": np.zeros(3, np.int64)}, "labels"),
        ({"images": np.zeros((0, 12, 12, 3), np.float32)}, "images"),
    ],
)
def test_bad_parameters(tiny, changes, parameter):
    model, images, labels = tiny
    arguments = {"images": images, "labels": labels, **changes}
    redraws = arguments.pop("redraws", 2)
    with pytest.raises(ParameterError) as error:
        redraw_accuracy(model, TINY_DEFENSE, **arguments, redraws=redraws, seed=0)
    assert error.value.parameters == (parameter,)
