"""What an attack optimises against and how its success is judged, chosen in one place.

Both the directory driver (`attacks.evaluation.generate.Attacker`) and the paper's
cells (`attacks.paper.compute`) attack one of three targets:
- the full randomized defense, `RandomizedDefense(model, config)`, for an attack on
  the defense (EOT-PGD; catalog target DEFENSE);
- the fixed defense of a diagnostic scenario (Section 4.6), `fixed_defense_model`,
  for the paper's adaptive row there (`on_defense`);
- else the scenario's target model, `target_model` (the plain model, or an
  ensemble of patterns seen through its mean logits).
Logits functions are traced once (`tf.function`), so that every batch reuses them.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from attacks import kinds
from attacks.catalog import DEFENSE, Attack
from attacks.evaluation.scenarios import Scenario, fixed_defense_model, target_model
from attacks.kinds import Target
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.randomized_defense import RandomizedDefense

Predict = Callable[[tf.Tensor], np.ndarray]


def next_seed(seed: int | None) -> int | None:
    """The seed of a run's second generator: `seed + 1` (None stays None), so that the
    patterns it draws are not the first generator's."""
    return None if seed is None else seed + 1


def attack_target(
    model: keras.Model,
    entry: Attack,
    *,
    scenario: Scenario | None = None,
    config: DefenseConfig | None = None,
    on_defense: bool = False,
    seed: int | None = None,
    chunk_size: int | None = None,
) -> Target:
    """What catalog attack `entry` optimises against on `model`.

    An attack on the defense gets `RandomizedDefense(model, config)` drawing its
    patterns from `seed`, `chunk_size` patterns per pass; any other attack, and one
    on the defense of a scenario whose defense is fixed (`on_defense`; plain APGD
    there), the logits of `scenario`'s fixed defense (with `on_defense`) or target
    model.
    """
    fixed = on_defense and scenario is not None and not scenario.randomized_defense
    if entry.target == DEFENSE and not fixed:
        if config is None:
            raise ValueError(f"{entry.name} attacks the randomized defense: give its config")
        return RandomizedDefense(model, config, chunk_size=chunk_size, seed=seed)
    if scenario is None:
        raise ValueError(f"{entry.name} attacks a scenario's model: give the scenario")
    attacked = fixed_defense_model if on_defense else target_model
    return tf.function(attacked(model, scenario).logits, reduce_retracing=True)


def judge(target: Target, *, seed: int | None) -> Predict:
    """How the attacked model labels [-1, 1] images: a logits function by its argmax
    (`attacks.kinds.predictions`); the randomized defense as `RandomizedEnsemble` of its
    model and config decides, with patterns of its own from `seed`, fresh at every call."""
    if isinstance(target, RandomizedDefense):
        return RandomizedEnsemble(target.classifier, target.config, seed=seed).predict
    return lambda images: kinds.predictions(target, images)


def run_attack(
    attack: kinds.Attack,
    target: Target,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    targeted: bool = False,
) -> np.ndarray:
    """`attack` on `target` as float32 [-1, 1] images; `labels` are the true labels, or the
    targets when `targeted`."""
    return np.asarray(attack(target, images, labels, targeted=targeted), np.float32)
