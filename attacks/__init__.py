"""Adversarial attacks on the slim classifiers and on the randomization defense.

Conventions shared by every attack:
- images live in model input space, float32 NHWC in [-1, 1]; epsilons are given in
  [0, 255] pixel units, as the paper and the competition do (`pixels_to_model`);
- an attack is a class of one kind (`attacks.kinds`: fixed budget or minimal
  perturbation) made with its keyword-only hyper-parameters; every attack is called
  the same way, `attack(target, images, labels, *, targeted=False)`, on a logits
  function (a scenario's `TargetModel.logits`, a Keras classifier) or on
  `defense.RandomizedDefense` (EOT-PGD); the base class checks the inputs, projects
  and clips the result and reports success, each attack implements only `run`;
- `attacks.catalog` lists them by name; `attacks.evaluation` is what uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from defense.common.exports import lazy_exports

if TYPE_CHECKING:
    import tensorflow as tf

LogitsFn = Callable[["tf.Tensor"], "tf.Tensor"]

# The attacks: the two kinds, each attack, the catalog, and the units they share.
_ATTACKS = {
    "Attack": "attacks.kinds",
    "FixedBudgetAttack": "attacks.kinds",
    "MinimalPerturbationAttack": "attacks.kinds",
    "FGSM": "attacks.fgsm",
    "PGD": "attacks.pgd",
    "EOTPGD": "attacks.eot",
    "APGD": "attacks.apgd",
    "DIFGSM": "attacks.difgsm",
    "DeepFool": "attacks.deepfool",
    "CarliniWagnerL2": "attacks.carlini_wagner",
    "ATTACKS": "attacks.catalog",
    "get_attack": "attacks.catalog",
}
_UNITS = ["CLIP_MIN", "CLIP_MAX", "LogitsFn", "pixels_to_model", "model_to_pixels"]
# Evaluation: the paper's scenarios, accuracies under its protocol, adversarial sets.
_EVALUATION = {
    "SCENARIOS": "attacks.evaluation.protocol",
    "PAPER_EPSILONS": "attacks.evaluation.protocol",
    "Scenario": "attacks.evaluation.scenarios",
    "TargetModel": "attacks.evaluation.scenarios",
    "build_scenario": "attacks.evaluation.scenarios",
    "target_model": "attacks.evaluation.scenarios",
    "fixed_defense_model": "attacks.evaluation.scenarios",
    "evaluate": "attacks.evaluation.accuracy",
    "evaluate_batches": "attacks.evaluation.accuracy",
    "AdversarialSet": "attacks.evaluation.adversarial_set",
    "read_adversarial_set": "attacks.evaluation.adversarial_set",
}
__all__ = [*_ATTACKS, *_UNITS, *_EVALUATION]
__getattr__ = lazy_exports(__name__, {**_ATTACKS, **_EVALUATION})
CLIP_MIN, CLIP_MAX = -1.0, 1.0


def pixels_to_model(epsilon: float) -> float:
    """An epsilon in [0, 255] pixel units as a distance in [-1, 1] model space."""
    return float(epsilon) * 2.0 / 255.0


def model_to_pixels(distance: float) -> float:
    """A distance in [-1, 1] model space in [0, 255] pixel units."""
    return float(distance) * 255.0 / 2.0
