"""One cell of a table: its attack's adversarials, judged by the paper's protocol.

A cell is one model, one row and one scenario on an image set. Its attack runs on
the scenario's target model (`attacks.evaluation.scenarios`), except the adaptive
rows', which attack the defense itself: EOT-PGD and APGD-EOT on
`RandomizedDefense(model, config)`, or PGD and plain APGD on a diagnostic scenario's
fixed defense. Batch by batch, the adversarials are taken as floats (before
rounding, as the paper's near-0% target accuracies imply) or rounded to uint8 PNG
pixels, and `attacks.evaluation.accuracy.evaluate_batches` judges them:
target-model accuracy over all patterns, defense accuracy over `runs` runs with
fresh patterns (one generator for the whole cell, seeded).

Seeds make a cell's numbers independent of what ran before it: the global seed is
set at each cell's start (the random starts of PGD and of APGD on a fixed defense),
the defense's patterns come from `seed`, EOT-PGD's and APGD-EOT's from `seed + 1`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import keras
import numpy as np

from attacks.catalog import get_attack
from attacks.evaluation.accuracy import evaluate_batches
from attacks.evaluation.generate import distances, to_outputs
from attacks.evaluation.scenarios import Scenario, build_scenario, target_model
from attacks.evaluation.targets import attack_target, judge, next_seed, run_attack
from attacks.execution.resident import Resident
from attacks.paper.data import ImageSet
from attacks.paper.models import ModelEntry
from defense.common.images import to_model_input
from defense.ensemble import RandomizedEnsemble

AttackFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CellResult:
    """A cell's accuracies (fractions), mean perturbation (pixel units; None for clean
    images) and how long it took."""

    target: float
    defense: float
    l2: float | None
    linf: float | None
    seconds: float


def scenario_of(entry: ModelEntry, name: str) -> Scenario:
    """Scenario `name` at the model's sizes."""
    return build_scenario(name, input_size=entry.input_size, out_size=entry.out_size)


def attack_function(
    model: keras.Model,
    entry: ModelEntry,
    scenario: Scenario,
    attack: str,
    params: dict[str, object],
    *,
    on_defense: bool,
    seed: int | None,
    chunk_size: int | None,
) -> AttackFn:
    """[-1, 1] images and labels -> adversarial [-1, 1] images, by catalog attack `attack`
    on the scenario's target model, or with `on_defense` on the defense itself (an attack
    on the randomized defense draws its patterns from `seed + 1`).

    An attack the catalog runs on the randomized defense (APGD) attacks a diagnostic
    scenario's fixed defense as the logits function it is (`attack_target`): plain
    APGD there."""
    catalog_entry = get_attack(attack)
    built = catalog_entry.build(params)
    target = attack_target(
        model,
        catalog_entry,
        scenario=scenario,
        config=entry.config,
        on_defense=on_defense,
        seed=next_seed(seed),
        chunk_size=chunk_size,
    )
    return functools.partial(run_attack, built, target)


def compute_cell(
    model: keras.Model | Resident[keras.Model],
    entry: ModelEntry,
    *,
    scenario: str,
    attack: str | None,
    params: dict[str, object],
    on_defense: bool,
    source: str,
    images: ImageSet,
    runs: int,
    seed: int | None,
    batch_size: int,
    chunk_size: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> CellResult:
    """Target and defense accuracy of one cell (clean images when `attack` is None);
    `progress` is called with the number of images of every finished batch. `model`
    may be a `Resident` (loaded once per worker process)."""
    started = time.perf_counter()
    if isinstance(model, Resident):
        model = model.get()
    the_scenario = scenario_of(entry, scenario)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    attack_fn = None
    if attack is not None:
        attack_fn = attack_function(
            model,
            entry,
            the_scenario,
            attack,
            params,
            on_defense=on_defense,
            seed=seed,
            chunk_size=chunk_size,
        )
    l2s: list[np.ndarray] = []
    linfs: list[np.ndarray] = []
    labels = np.asarray(images.labels, np.int64)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(images), batch_size):
            pixels = images.pixels(start, start + batch_size, the_scenario.input_size)
            truth = labels[start : start + len(pixels)]
            inputs = to_model_input(pixels)
            if attack_fn is not None:
                floats, rounded = to_outputs(pixels, attack_fn(inputs, truth), None)
                judged = floats if source == "float" else rounded
                l2, linf = distances(pixels, judged)
                l2s.append(l2)
                linfs.append(linf)
                inputs = to_model_input(judged)
            yield inputs, truth
            if progress is not None:
                progress(len(truth))

    accuracies = evaluate_batches(
        model, the_scenario, batches(), config=entry.config, runs=runs, seed=seed
    )
    return CellResult(
        target=accuracies.target,
        defense=accuracies.defense,
        l2=float(np.mean(np.concatenate(l2s))) if l2s else None,
        linf=float(np.mean(np.concatenate(linfs))) if linfs else None,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Example:
    """One image attacked, for Figure 1: pixels and labels of the plain model and the defense."""

    clean: np.ndarray
    adversarial: np.ndarray
    clean_label: int
    adversarial_label: int
    defense_label: int


def attack_example(
    model: keras.Model,
    entry: ModelEntry,
    *,
    attack: str,
    params: dict[str, object],
    pixels: np.ndarray,
    label: int,
    seed: int | None,
) -> Example:
    """One image (uint8 [H, W, 3]) attacked in the vanilla scenario, with the plain
    model's labels before and after and one run of the defense's label after."""
    scenario = scenario_of(entry, "vanilla")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    run = attack_function(
        model, entry, scenario, attack, params, on_defense=False, seed=seed, chunk_size=None
    )
    clean = to_model_input(pixels[None])
    _, rounded = to_outputs(pixels[None], run(clean, np.array([label])), None)
    plain = judge(target_model(model, scenario).logits, seed=None)
    before = int(plain(clean)[0])
    after = int(plain(to_model_input(rounded))[0])
    ensemble = RandomizedEnsemble(model, entry.config, seed=seed)
    defended = int(ensemble.predict(to_model_input(rounded))[0])
    return Example(pixels, rounded[0], before, after, defended)
