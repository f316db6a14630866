"""The card's attacks, each a function returning adversarials, all judged the same way
(`judgement.redraw_accuracy`, the deployed defense over repeated draws).

- `autoattack_rand`: AutoAttack's `rand` version, APGD-CE then APGD-DLR on the
  images the judgement still finds correct in some redraw, both with EOT
  (`samples` fresh patterns per step), keeping per image the stronger result;
- `eot_pgd`: EOT-PGD, the same budget, steps and samples;
- `pgd_without_eot`: the same EOT-PGD with one pattern per step (samples=1), so
  that the two differ only in the EOT averaging;
- `transfer_pgd`: PGD on the undefended model's logits, judged on the defense;
- `transfer_di_fgsm`: DI-FGSM (`attacks.difgsm`) on the undefended model's logits,
  the transfer attack that sees the model through this defense's transformation.

Every attack has the same signature, `(model, config, images, labels, budget, *,
seed)`, and its cost per image follows from `budget` (`attack_passes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from attacks.kinds import check_count, check_linf_budget
from attacks.pgd import default_step_size
from attacks.robustness.judgement import (
    Accuracy,
    Redraws,
    derive_seed,
    keep_strongest,
    redraw_accuracy,
)
from defense.config import DefenseConfig
from defense.randomized_defense import RandomizedDefense


@dataclass(frozen=True)
class Budget:
    """What the card's attacks may spend.

    epsilon: L-infinity budget in pixel units. iterations: APGD iterations and PGD
    steps. samples: EOT patterns per step. step_size: the PGD variants' step in
    pixel units (None: epsilon / 8). redraws: of the judgement (and of
    `autoattack_rand`'s choice between CE and DLR). chunk_size: patterns per image
    per pass of the attacks' EOT (None: all at once). judge_chunk_size: items per
    pass of the judgement.
    """

    epsilon: float = 16.0
    iterations: int = 100
    samples: int = 20
    step_size: float | None = None
    redraws: int = 5
    restarts: int = 1
    chunk_size: int | None = None
    judge_chunk_size: int = 16

    def __post_init__(self) -> None:
        check_count("iterations", self.iterations, 1)
        check_linf_budget(self.epsilon, self.pgd_step_size, self.iterations)
        check_count("samples", self.samples, 1)
        check_count("redraws", self.redraws, 1)
        check_count("restarts", self.restarts, 1)
        if self.chunk_size is not None:
            check_count("chunk_size", self.chunk_size, 1)
        check_count("judge_chunk_size", self.judge_chunk_size, 1)

    @property
    def pgd_step_size(self) -> float:
        """The PGD variants' step in pixel units."""
        return default_step_size(self.epsilon, self.step_size)


@dataclass(frozen=True)
class AttackResult:
    """One attack's robust accuracy on the deployed defense and what it cost per image.

    forward_passes and backward_passes count pattern passes per image (a pass of
    the network on one image through one pattern; for `transfer_pgd`, passes of the
    plain model), from the attack's hyper-parameters: an upper bound where an attack
    stops early or works on a subset. forward_passes includes the judgement's
    redraws * num_iterations. seconds: the attack's wall time, without the judgement.
    """

    name: str
    accuracy: Accuracy
    forward_passes: int
    backward_passes: int
    seconds: float


Attack = Callable[..., np.ndarray]


def _defense(
    model: keras.Model, config: DefenseConfig, budget: Budget, seed: int
) -> RandomizedDefense:
    """The randomized defense an attack optimises against, its patterns from `seed`."""
    return RandomizedDefense(model, config, chunk_size=budget.chunk_size, seed=seed)


def apgd_eot(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
    dlr: bool = False,
) -> np.ndarray:
    """APGD with EOT on the randomized defense (CE, or DLR), one restart; its random
    start and patterns from `seed`."""
    from attacks.apgd import APGD

    attack = APGD(epsilon=budget.epsilon, n_iter=budget.iterations, samples=budget.samples, dlr=dlr)
    return np.array(attack(_defense(model, config, budget, seed), images, labels))


def autoattack_rand(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
) -> np.ndarray:
    """APGD-CE, then APGD-DLR on the images some redraw still labels correctly, each
    `budget.restarts` times from fresh random starts; per image the run the judgement
    (with a seed of its own, the same draws for every run) finds correct in the fewest
    redraws: restarts and losses are kept by the deployed defense, not by one draw."""
    select_seed = derive_seed(seed, "select")

    def judged(candidates: np.ndarray, truth: np.ndarray) -> Redraws:
        return redraw_accuracy(
            model,
            config,
            candidates,
            truth,
            redraws=budget.redraws,
            seed=select_seed,
            chunk_size=budget.judge_chunk_size,
        )

    def strongest_run(
        loss: str, subset: np.ndarray, best: np.ndarray | None
    ) -> tuple[np.ndarray, Redraws]:
        """Per image of `subset`, the strongest of `best` (if any) and the restarts of
        `loss`, with its judgement."""
        candidates = [] if best is None else [best]
        for restart in range(budget.restarts):
            candidates.append(
                apgd_eot(
                    model,
                    config,
                    images[subset],
                    labels[subset],
                    budget,
                    seed=derive_seed(seed, f"apgd-{loss}", restart),
                    dlr=loss == "dlr",
                )
            )
        judgements = [judged(candidate, labels[subset]) for candidate in candidates]
        picked = keep_strongest(candidates, judgements)
        chosen = np.argmin([judgement.correct_counts for judgement in judgements], axis=0)
        correct = np.stack([judgement.correct for judgement in judgements])  # [C, R, N]
        return picked, Redraws(correct[chosen, :, np.arange(len(chosen))].T)

    everything = np.arange(len(images))
    found, judgement = strongest_run("ce", everything, None)
    todo = judgement.correct.any(axis=0)
    if todo.any():
        found[todo], _ = strongest_run("dlr", everything[todo], found[todo])
    return found


def _eot_pgd_with(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    seed: int,
    samples: int,
) -> np.ndarray:
    from attacks.eot import EOTPGD

    attack = EOTPGD(
        epsilon=budget.epsilon,
        step_size=budget.pgd_step_size,
        steps=budget.iterations,
        samples=samples,
    )
    return np.array(attack(_defense(model, config, budget, seed), images, labels))


def eot_pgd(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
) -> np.ndarray:
    """EOT-PGD: PGD on the EOT gradient over `budget.samples` fresh patterns per step."""
    return _eot_pgd_with(model, config, images, labels, budget, seed, budget.samples)


def pgd_without_eot(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
) -> np.ndarray:
    """The same EOT-PGD with one fresh pattern per step: what EOT's averaging adds."""
    return _eot_pgd_with(model, config, images, labels, budget, seed, 1)


def _undefended_logits(
    model: keras.Model, config: DefenseConfig, images: np.ndarray
) -> Callable[[tf.Tensor], tf.Tensor]:
    """The undefended model's logits (the vanilla scenario), for the transfer attacks."""
    from attacks.evaluation.scenarios import build_scenario, target_model

    scenario = build_scenario("vanilla", input_size=images.shape[1], out_size=config.out_size)
    return target_model(model, scenario).logits


def transfer_pgd(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
) -> np.ndarray:
    """PGD on the undefended model's logits (its random start from TensorFlow's global
    seed, set to `seed`), to be judged on the defense: white-box attacks on the defense
    must beat it."""
    from attacks.pgd import PGD

    tf.random.set_seed(seed)
    attack = PGD(epsilon=budget.epsilon, step_size=budget.pgd_step_size, steps=budget.iterations)
    return np.asarray(attack(_undefended_logits(model, config, images), images, labels))


def transfer_di_fgsm(
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
) -> np.ndarray:
    """DI-FGSM (its own step, epsilon / iterations) on the undefended model's logits, its
    patterns from TensorFlow's global seed, set to `seed`: the transfer attack built on
    this defense's own transformation."""
    from attacks.difgsm import DIFGSM

    tf.random.set_seed(seed)
    attack = DIFGSM(epsilon=budget.epsilon, steps=budget.iterations)
    return np.asarray(attack(_undefended_logits(model, config, images), images, labels))


# Per attack: the function, and its (forward, backward) passes per image from the budget.
ATTACKS: dict[str, tuple[Attack, Callable[[Budget], int]]] = {
    # CE and DLR, each `restarts` runs of (iterations + 1) EOT estimates of `samples` patterns.
    "autoattack_rand": (
        autoattack_rand,
        lambda b: 2 * b.restarts * (b.iterations + 1) * b.samples,
    ),
    "eot_pgd": (eot_pgd, lambda b: b.iterations * b.samples),
    "pgd_without_eot": (pgd_without_eot, lambda b: b.iterations),
    # Passes of the plain model, one per step.
    "transfer_pgd": (transfer_pgd, lambda b: b.iterations),
    "transfer_di_fgsm": (transfer_di_fgsm, lambda b: b.iterations),
}


def attack_passes(name: str, budget: Budget) -> int:
    """Per image, the forward (and as many backward) passes attack `name` spends."""
    return ATTACKS[name][1](budget)


class Evaluated(NamedTuple):
    """An attack's result, its adversarials and their judgement."""

    result: AttackResult
    adversarials: np.ndarray
    judged: Redraws


def evaluate_attack(
    name: str,
    model: keras.Model,
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    budget: Budget,
    *,
    seed: int,
    judge_seed: int,
) -> Evaluated:
    """Attack `name` (from a seed derived from `seed` and the name), timed, and its
    adversarials judged over `budget.redraws` redraws from `judge_seed`."""
    attack = ATTACKS[name][0]
    start = time.perf_counter()
    adversarials = attack(model, config, images, labels, budget, seed=derive_seed(seed, name))
    seconds = time.perf_counter() - start
    judged = redraw_accuracy(
        model,
        config,
        adversarials,
        labels,
        redraws=budget.redraws,
        seed=judge_seed,
        chunk_size=budget.judge_chunk_size,
    )
    passes = attack_passes(name, budget)
    judgement = budget.redraws * config.num_iterations
    result = AttackResult(name, judged.summary(), passes + judgement, passes, seconds)
    return Evaluated(result, adversarials, judged)
