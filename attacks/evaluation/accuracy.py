"""Accuracies as the paper reports them: target model versus defense model.

Target-model accuracy counts correctly classified patterns over all patterns
(one pattern for the plain model). The randomized defense is run `runs` times
with fresh patterns and averaged (the paper ran each experiment 3 times); the
diagnostic scenarios' fixed defenses run once.

An adversarial set written by `generate_adversarial` (`attacks.evaluation.adversarial_set`)
can be judged as its uint8 PNGs (what the competition sees) or as its lossless
float arrays (before rounding, which undoes much of a minimal-perturbation
attack); every result names the source it was measured on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt

from attacks.evaluation.scenarios import Scenario, fixed_defense_model, target_model
from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.patterns import make_generator


@dataclass(frozen=True)
class Accuracies:
    """Top-1 accuracy of the target model and of the defense on the same images."""

    target: float
    defense: float


def evaluate_batches(
    model: keras.Model,
    scenario: Scenario,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
    chunk_size: int = 256,
    early_exit: bool = True,
) -> Accuracies:
    """Both accuracies over batches of ([-1, 1] images, labels), one generator for all.

    `early_exit` is the ensemble's (the same labels, from fewer patterns)."""
    if runs < 1:
        raise ParameterError(f"runs must be >= 1, got {runs}", "runs")
    target = target_model(model, scenario)
    if scenario.randomized_defense:
        ensemble = RandomizedEnsemble(
            model,
            config,
            generator=make_generator(seed),
            chunk_size=chunk_size,
            early_exit=early_exit,
        )
        defense_runs = runs
    else:
        fixed = fixed_defense_model(model, scenario)
        defense_runs = 1
    target_correct = defense_correct = images_seen = 0
    for images, labels in batches:
        labels = np.asarray(labels)
        target_correct += int(target.correct_patterns(images, labels).sum())
        for _ in range(defense_runs):
            if scenario.randomized_defense:
                predictions = ensemble.predict(images)
            else:
                predictions = np.argmax(fixed.logits(images).numpy(), axis=1)
            defense_correct += int(np.sum(predictions == labels))
        images_seen += len(labels)
    if images_seen == 0:
        raise ValueError("no images to evaluate")
    return Accuracies(
        target=target_correct / (target.num_patterns * images_seen),
        defense=defense_correct / (defense_runs * images_seen),
    )


def evaluate(
    model: keras.Model,
    scenario: Scenario,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
) -> Accuracies:
    """Both accuracies of one table cell pair, on images already in memory."""
    return evaluate_batches(
        model,
        scenario,
        [(np.asarray(images), np.asarray(labels))],
        config=config,
        runs=runs,
        seed=seed,
    )
