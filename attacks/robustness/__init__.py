"""A robustness card of the randomized defense (AutoAttack / RobustBench style).

`judgement` judges adversarials on the defense as deployed over repeated redraws;
`protocol` holds the card's attacks (AutoAttack's rand version, EOT-PGD, PGD
without EOT, transfer PGD and DI-FGSM); `convergence` the sweeps over EOT samples,
iterations and epsilon and the gradient sanity check; `cells` splits a card into
resumable units of work (per image shard: each attack, sweep point and K) and
stores them as they finish; `card` the `Card` and `evaluate_robustness`, which
runs every cell and assembles the card.
"""

from __future__ import annotations

from defense.common.exports import lazy_exports

_EXPORTS = {
    "Accuracy": "attacks.robustness.judgement",
    "Redraws": "attacks.robustness.judgement",
    "redraw_accuracy": "attacks.robustness.judgement",
    "keep_strongest": "attacks.robustness.judgement",
    "Budget": "attacks.robustness.protocol",
    "AttackResult": "attacks.robustness.protocol",
    "Sweep": "attacks.robustness.convergence",
    "CardSettings": "attacks.robustness.cells",
    "CellStore": "attacks.robustness.cells",
    "Card": "attacks.robustness.card",
    "evaluate_robustness": "attacks.robustness.card",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
