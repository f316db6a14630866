"""Projections of the workloads this project exists for, from unit times measured in
the benchmark's run: the full NIPS 2017 competition and the paper's Tables 1-6, on N
devices. Pure arithmetic; every figure it returns is a projection, and the benchmark
prints it as one.

The competition: 110 defenses x 161 attacks (non-targeted and targeted) on 5,000
images in batches of 100: an attack piece per (attack, batch), a defense piece per
(defense, batch, part of 100 of the batch's pooled adversarial images).

Tables 1-6 in network passes per image, forward-equivalents (a gradient costs
`BACKWARD_COST` forwards): each attack row at its settings' budget (DeepFool and C&W
at their iteration limits, so an upper estimate; both usually stop much earlier),
times the patterns an ensemble-pattern attack differentiates through, plus the
defense's evaluation (its runs x patterns per image), on each of the four networks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COMPETITION_DEFENSES = 110
COMPETITION_ATTACKS = 161
COMPETITION_IMAGES = 5000
COMPETITION_BATCH = 100
TIME_LIMIT_S = 500.0
# A gradient: one forward and a backward of about twice its cost.
BACKWARD_COST = 3.0
PAPER_NETWORKS = 4


@dataclass(frozen=True)
class Workload:
    """Units of work and the device-seconds they take in all."""

    name: str
    units: int
    device_seconds: float

    def days_on(self, devices: int) -> float:
        """Wall days on `devices` devices, each unit on one device, none idle."""
        return self.device_seconds / devices / 86_400


def competition_pieces(
    defenses: int = COMPETITION_DEFENSES,
    attacks: int = COMPETITION_ATTACKS,
    images: int = COMPETITION_IMAGES,
    batch: int = COMPETITION_BATCH,
) -> tuple[int, int]:
    """(attack pieces, defense pieces) when every attack writes every image."""
    batches = math.ceil(images / batch)
    # A batch's pool holds every attack's version of its images: `attacks` parts of `batch`.
    return attacks * batches, defenses * batches * attacks


def competition(
    attack_piece_s: float, defense_piece_s: float, overhead_s: float, name: str
) -> Workload:
    """The full competition with these seconds per attack and defense piece, each plus
    the harness's `overhead_s`."""
    attack_pieces, defense_pieces = competition_pieces()
    seconds = attack_pieces * (attack_piece_s + overhead_s)
    seconds += defense_pieces * (defense_piece_s + overhead_s)
    return Workload(name, attack_pieces + defense_pieces, seconds)


def attack_passes(attack: str, params: Mapping[str, Any]) -> float:
    """Forward-equivalents per image of one run of `attack` on one network."""
    if attack == "fgsm":
        return BACKWARD_COST
    if attack == "deepfool":
        # cleverhans: per iteration, the gradients of `nb_candidate` logits.
        return params["max_iter"] * params["nb_candidate"] * BACKWARD_COST
    if attack == "cw":
        return params["binary_search_steps"] * params["max_iterations"] * BACKWARD_COST
    if attack == "pgd":
        return params["steps"] * BACKWARD_COST
    if attack == "eot_pgd":
        return params["steps"] * params["samples"] * BACKWARD_COST
    if attack == "apgd":
        restarts = params.get("n_restarts", 1)
        return params["n_iter"] * params.get("samples", 1) * restarts * BACKWARD_COST
    raise ValueError(f"no pass count for attack {attack!r}")


def table_passes(
    rows: Mapping[str, tuple[str | None, Mapping[str, Any]]],
    *,
    attacked_patterns: int,
    defense_passes: float,
) -> float:
    """Forward-equivalents per image of one table on one network: each row's attack
    (None: clean images, no attack) through `attacked_patterns` patterns, then the
    defense's `defense_passes` on its images."""
    total = 0.0
    for attack, params in rows.values():
        if attack is not None:
            total += attack_passes(attack, params) * attacked_patterns
        total += defense_passes
    return total


def paper_tables(
    tables: Mapping[int, tuple[int, float]], seconds_per_pass: float, name: str
) -> Workload:
    """Tables 1-6 on the four networks: `tables` maps a table to (its images, its
    forward-equivalents per image on one network); `seconds_per_pass` is one forward
    of one image."""
    passes = sum(images * per_image for images, per_image in tables.values())
    seconds = passes * PAPER_NETWORKS * seconds_per_pass
    return Workload(name, len(tables) * PAPER_NETWORKS, seconds)
