"""Accuracies as the paper reports them: target model versus defense model.

Target-model accuracy counts correctly classified patterns over all patterns
(one pattern for the plain model). The randomized defense is run `runs` times
with fresh patterns and averaged (the paper ran each experiment 3 times); the
diagnostic scenarios' fixed defenses run once.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from attacks.scenarios import Scenario, fixed_defense_model, target_model
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.randomization import make_generator


@dataclass(frozen=True)
class Accuracies:
    """Top-1 accuracy of the target model and of the defense on the same images."""

    target: float
    defense: float


def target_accuracy(model: keras.Model, scenario: Scenario, images, labels) -> float:
    """Correctly classified patterns over all patterns of the scenario's target model."""
    target = target_model(model, scenario)
    correct = target.correct_patterns(images, labels)
    return float(correct.sum() / (target.num_patterns * len(labels)))


def defense_accuracy(
    model: keras.Model,
    scenario: Scenario,
    images,
    labels,
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
    chunk_size: int = 256,
) -> float:
    """Accuracy of the defense the scenario evaluates, averaged over `runs` random runs."""
    labels = np.asarray(labels)
    if not scenario.randomized_defense:
        logits = fixed_defense_model(model, scenario).logits(images)
        return float(np.mean(np.argmax(logits, axis=1) == labels))
    ensemble = RandomizedEnsemble(
        model, config, generator=make_generator(seed), chunk_size=chunk_size
    )
    return float(np.mean([np.mean(ensemble.predict(images) == labels) for _ in range(runs)]))


def evaluate(
    model: keras.Model,
    scenario: Scenario,
    images,
    labels,
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
) -> Accuracies:
    """Both accuracies of one table cell pair."""
    return Accuracies(
        target=target_accuracy(model, scenario, images, labels),
        defense=defense_accuracy(
            model, scenario, images, labels, config=config, runs=runs, seed=seed
        ),
    )
