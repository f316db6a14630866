"""Adversarial attacks on the slim classifiers and on the randomization defense.

Conventions shared by every attack module:
- images live in model input space, float32 NHWC in [-1, 1]; attacks clip there;
- an attack is a class of one kind (`attacks.kinds`: fixed budget or minimal
  perturbation) made with its keyword-only hyper-parameters and called on a
  target: a *logits function* `x -> [N, classes]` (a scenario's target model,
  `attacks.evaluation.scenarios.TargetModel.logits`), or for EOT-PGD the randomized defense
  itself (`defense.RandomizedDefense`); `attacks.catalog` lists them by name;
- epsilons are given in [0, 255] pixel units, as the paper and the competition
  do, and converted with `pixels_to_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from defense.common.exports import lazy_exports

if TYPE_CHECKING:
    import tensorflow as tf

LogitsFn = Callable[["tf.Tensor"], "tf.Tensor"]

# What a user may import, loaded on first use (see `defense.lazy_exports`).
_EXPORTS = {
    "FGSM": "attacks.fgsm",
    "PGD": "attacks.pgd",
    "EOTPGD": "attacks.eot",
    "DeepFool": "attacks.deepfool",
    "CarliniWagnerL2": "attacks.carlini_wagner",
    "FixedBudgetAttack": "attacks.kinds",
    "MinimalPerturbationAttack": "attacks.kinds",
    "Scenario": "attacks.evaluation.scenarios",
    "TargetModel": "attacks.evaluation.scenarios",
    "build_scenario": "attacks.evaluation.scenarios",
    "target_model": "attacks.evaluation.scenarios",
    "fixed_defense_model": "attacks.evaluation.scenarios",
    "evaluate": "attacks.evaluation.accuracy",
    "evaluate_batches": "attacks.evaluation.accuracy",
    "AdversarialSet": "attacks.evaluation.adversarial_set",
    "read_adversarial_set": "attacks.evaluation.adversarial_set",
    "ATTACKS": "attacks.catalog",
    "get_attack": "attacks.catalog",
    "PAPER_EPSILONS": "attacks.evaluation.protocol",
    "SCENARIOS": "attacks.evaluation.protocol",
}
__all__ = sorted(
    [*_EXPORTS, "CLIP_MAX", "CLIP_MIN", "LogitsFn", "model_to_pixels", "pixels_to_model"]
)
__getattr__ = lazy_exports(__name__, _EXPORTS)
CLIP_MIN, CLIP_MAX = -1.0, 1.0


def pixels_to_model(epsilon: float) -> float:
    """An epsilon in [0, 255] pixel units as a distance in [-1, 1] model space."""
    return float(epsilon) * 2.0 / 255.0


def model_to_pixels(distance: float) -> float:
    """A distance in [-1, 1] model space in [0, 255] pixel units."""
    return float(distance) * 255.0 / 2.0
