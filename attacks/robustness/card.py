"""The robustness card: an AutoAttack / RobustBench style evaluation of the randomized
defense, in one call (`evaluate_robustness`), as JSON and as Markdown.

The card holds the clean accuracy and each attack's robust accuracy on the defense
as deployed (mean and spread over redraws, and any-fooled), what each attack cost
per image, the convergence sweeps of APGD-EOT over EOT samples and iterations with
the converged point marked, the cosine of independent EOT gradients against K, the
budget sweep up to an unbounded epsilon, and the settings that decide the numbers
(budget, redraws, root seed, versions, checkpoint digest).

`evaluate_robustness` computes the card as cells (`attacks.robustness.cells`), stored
as they finish when given a folder, so that an interrupted card resumes; `assemble`
joins the cells' results into the card.

The JSON uses RobustBench's field names where they exist, in its units (`clean_acc`
and `autoattack_acc` as percentage strings of the mean accuracy, `eps` as "16/255",
`number_forward_passes` the defense's passes per classification); the card itself,
in fractions, is under `robustness_card`, from which `Card.from_json` reads it back.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from attacks.execution.executor import Executor, LocalExecutor, Unit
from attacks.execution.resident import Resident
from attacks.robustness.cells import (
    CLEAN,
    COSINE,
    STRONGEST,
    SWEEPS,
    CardCell,
    CardSettings,
    CellResult,
    CellStore,
    card_cells,
    cells_of,
    compute_cell,
    inputs_digest,
    shard_inputs,
)
from attacks.robustness.convergence import (
    EPSILONS,
    ITERATIONS,
    SAMPLES,
    TOLERANCE,
    Sweep,
    sweep,
)
from attacks.robustness.judgement import Accuracy, Redraws, checked_inputs, root_seed
from attacks.robustness.protocol import ATTACKS, AttackResult, Budget, attack_passes
from defense.config import DefenseConfig

PACKAGE = "randomization-defense"
# The attack whose accuracy is RobustBench's `autoattack_acc`.
AUTOATTACK = "autoattack_rand"


@dataclass(frozen=True)
class Card:
    """Everything one robustness evaluation found, and the settings behind it.

    strongest: per image the strongest of the card's attacks (fewest redraws correct
    on the attacks' judgement), judged again on fresh redraws.
    """

    name: str
    budget: Budget
    seed: int
    num_iterations: int
    images: int
    tolerance: float
    clean: Accuracy
    attacks: tuple[AttackResult, ...]
    strongest: Accuracy
    samples_sweep: Sweep
    iterations_sweep: Sweep
    gradient_cosine: tuple[tuple[int, float], ...]
    budget_sweep: Sweep
    versions: dict[str, str]
    checkpoint_sha256: str | None = None

    def attack(self, name: str) -> AttackResult:
        """The result of attack `name`."""
        return next(result for result in self.attacks if result.name == name)

    def to_json(self) -> str:
        """RobustBench's fields, then the whole card under `robustness_card`."""
        fields = {
            "name": self.name,
            "threat_model": "Linf",
            "eps": f"{self.budget.epsilon:g}/255",
            "clean_acc": f"{100 * self.clean.mean:.2f}",
            "autoattack_acc": f"{100 * self.attack(AUTOATTACK).accuracy.mean:.2f}",
            "number_forward_passes": self.num_iterations,
            "robustness_card": dataclasses.asdict(self),
        }
        return json.dumps(fields, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Card:
        """The card `to_json` wrote."""
        card = json.loads(text)["robustness_card"]
        return cls(
            **{
                **card,
                "budget": Budget(**card["budget"]),
                "clean": Accuracy(**card["clean"]),
                "attacks": tuple(_attack_result(result) for result in card["attacks"]),
                "strongest": Accuracy(**card["strongest"]),
                "samples_sweep": _sweep(card["samples_sweep"]),
                "iterations_sweep": _sweep(card["iterations_sweep"]),
                "gradient_cosine": tuple((int(k), c) for k, c in card["gradient_cosine"]),
                "budget_sweep": _sweep(card["budget_sweep"]),
            }
        )

    def to_markdown(self) -> str:
        """The card as Markdown tables."""
        return "\n".join(_markdown(self)) + "\n"


def _attack_result(fields: dict[str, Any]) -> AttackResult:
    return AttackResult(**{**fields, "accuracy": Accuracy(**fields["accuracy"])})


def _sweep(fields: dict[str, Any]) -> Sweep:
    return Sweep(
        parameter=fields["parameter"],
        values=tuple(fields["values"]),
        accuracies=tuple(Accuracy(**accuracy) for accuracy in fields["accuracies"]),
        converged_at=fields["converged_at"],
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _cells(accuracy: Accuracy) -> list[str]:
    """The robust accuracy (mean ± std over redraws) and any-fooled accuracy cells."""
    mean, std = _percent(accuracy.mean), _percent(accuracy.std)
    return [f"{mean} ± {std}", _percent(accuracy.any_fooled)]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _sweep_markdown(sweep: Sweep, tolerance: float) -> list[str]:
    rows = [
        [f"{value:g}", *_cells(accuracy), "converged" if value == sweep.converged_at else ""]
        for value, accuracy in zip(sweep.values, sweep.accuracies, strict=True)
    ]
    table = _table((sweep.parameter, "robust accuracy", "any-fooled", ""), rows)
    if sweep.converged_at is None:
        verdict = (
            f"**Not converged**: no {sweep.parameter} from which every larger one moves the "
            f"accuracy by less than {_percent(tolerance)}; the attack may still be too weak."
        )
    else:
        verdict = (
            f"Converged at {sweep.parameter} = {sweep.converged_at:g}: larger values move the "
            f"accuracy by less than {_percent(tolerance)}."
        )
    return [*table, verdict, ""]


def _markdown(card: Card) -> list[str]:
    budget = card.budget
    lines = [
        f"# Robustness card: {card.name}",
        "",
        f"L-infinity, eps = {budget.epsilon:g}/255 ({budget.epsilon:g} pixel units), on "
        f"{card.images} images. "
        f"Judged on the defense as deployed ({card.num_iterations} patterns per "
        f"classification) over {budget.redraws} redraws: mean ± std of the per-redraw "
        "accuracy, and any-fooled accuracy (correct in every redraw). Attacks: "
        f"{budget.iterations} iterations, {budget.samples} EOT samples per step. "
        f"Seed {card.seed}.",
        "",
        "## Accuracy",
        "",
    ]
    rows = [["clean", *_cells(card.clean), "", "", ""]]
    rows += [
        [
            result.name,
            *_cells(result.accuracy),
            str(result.forward_passes),
            str(result.backward_passes),
            f"{result.seconds:.1f}",
        ]
        for result in card.attacks
    ]
    rows.append(["strongest per image", *_cells(card.strongest), "", "", ""])
    header = ["attack", "robust accuracy", "any-fooled", "forward / image"]
    header += ["backward / image", "seconds"]
    lines += _table(header, rows)
    lines += [
        "Passes per image are pattern passes from the attacks' hyper-parameters (upper "
        "bounds); forward passes include the judgement's redraws x patterns.",
        "",
        "## Convergence of APGD-EOT",
        "",
        f"### EOT samples ({budget.iterations} iterations)",
        "",
        *_sweep_markdown(card.samples_sweep, card.tolerance),
        f"### Iterations ({budget.samples} EOT samples)",
        "",
        *_sweep_markdown(card.iterations_sweep, card.tolerance),
        "## Gradient sanity",
        "",
        "Cosine similarity of two independent K-sample EOT gradients, mean over images "
        "(rises towards 1 for a consistent gradient).",
        "",
        *_table(("K", "cosine"), ((str(k), f"{c:.3f}") for k, c in card.gradient_cosine)),
        "## Budget sweep",
        "",
    ]
    sweep = card.budget_sweep
    rows = [
        [f"{value:g}", *_cells(accuracy)]
        for value, accuracy in zip(sweep.values, sweep.accuracies, strict=True)
    ]
    lines += _table(("epsilon", "robust accuracy", "any-fooled"), rows)
    zero = next(
        (v for v, a in zip(sweep.values, sweep.accuracies, strict=True) if a.mean == 0), None
    )
    if zero is not None:
        lines.append(f"Reaches 0 % at epsilon = {zero:g}.")
    else:
        lines.append(
            f"**Does not reach 0 %** by epsilon = {sweep.values[-1]:g}: an unbounded attack "
            "should; the attack is failing, not the defense winning."
        )
    lines += ["", "## Settings", ""]
    settings = {
        **{f"budget.{key}": value for key, value in dataclasses.asdict(budget).items()},
        "tolerance": card.tolerance,
        "checkpoint sha256": card.checkpoint_sha256,
        **card.versions,
    }
    lines += _table(("setting", "value"), ((key, str(value)) for key, value in settings.items()))
    return lines


def versions() -> dict[str, str]:
    """The versions that decide the numbers: Python, TensorFlow, Keras, NumPy, this package."""
    import tensorflow as tf

    try:
        package = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        package = "not installed"
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        PACKAGE: package,
    }


def _joined(results: Sequence[CellResult]) -> Redraws:
    """The judgement of a step over all images: its shards' judgements side by side."""
    return Redraws(np.concatenate([result.judged.correct for result in results], axis=1))


def assemble(
    settings: CardSettings,
    cells: Sequence[CardCell],
    results: Mapping[str, CellResult],
    *,
    name: str,
    seed: int,
    num_iterations: int,
    checkpoint_sha256: str | None = None,
) -> Card:
    """The card of finished `cells` (their `results` by key), shards joined in order."""
    budget = settings.budget

    def step(step: str, value: float | None = None) -> list[CellResult]:
        return [results[cell.key] for cell in cells_of(cells, step, value)]

    attacks = []
    for attack in ATTACKS:
        found = step(attack)
        passes = attack_passes(attack, budget)
        attacks.append(
            AttackResult(
                attack,
                _joined(found).summary(),
                passes + budget.redraws * num_iterations,
                passes,
                sum(result.seconds for result in found),
            )
        )
    sweeps = {
        parameter: sweep(
            parameter,
            getattr(settings, field),
            [
                _joined(step(parameter, float(value))).summary()
                for value in getattr(settings, field)
            ],
            None if parameter == "epsilon" else settings.tolerance,
        )
        for parameter, field in SWEEPS.items()
    }
    cosines = tuple(
        (k, float(np.concatenate([r.cosines for r in step(COSINE, float(k))]).mean()))
        for k in settings.cosine_samples
    )
    return Card(
        name=name,
        budget=budget,
        seed=seed,
        num_iterations=num_iterations,
        images=cells[-1].stop,
        tolerance=settings.tolerance,
        clean=_joined(step(CLEAN)).summary(),
        attacks=tuple(attacks),
        strongest=_joined(step(STRONGEST)).summary(),
        samples_sweep=sweeps["samples"],
        iterations_sweep=sweeps["iterations"],
        gradient_cosine=cosines,
        budget_sweep=sweeps["epsilon"],
        versions=versions(),
        checkpoint_sha256=checkpoint_sha256,
    )


def evaluate_robustness(
    model: keras.Model | Resident[keras.Model],
    config: DefenseConfig,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    epsilon: float = 16.0,
    redraws: int = 5,
    seed: int | None = None,
    iterations: int = 100,
    samples: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    sweep_samples: Sequence[int] = SAMPLES,
    sweep_iterations: Sequence[int] = ITERATIONS,
    cosine_samples: Sequence[int] = SAMPLES,
    epsilons: Sequence[float] = EPSILONS,
    tolerance: float = TOLERANCE,
    chunk_size: int | None = None,
    judge_chunk_size: int = 16,
    shard_size: int | None = None,
    cells_dir: str | os.PathLike | None = None,
    identity: Mapping[str, Any] | None = None,
    name: str | None = None,
    checkpoint_sha256: str | None = None,
    executor: Executor | None = None,
    progress: Callable[[int, int, str | None], object] | None = None,
) -> Card:
    """The robustness card of `model` behind `config` on `images` (float [-1, 1] NHWC)
    with their true `labels`.

    `epsilon` and `step_size` (PGD's, None: epsilon / 8) are pixel units; attacks run
    `iterations` steps of `samples` EOT patterns (`chunk_size` patterns per image per
    pass), AutoAttack-rand `restarts` runs per loss; every result is judged over
    `redraws` redraws of the deployed defense (`judge_chunk_size` items per pass). The
    sweeps' points are `sweep_samples`, `sweep_iterations`, `epsilons` and
    `cosine_samples`; the images are split into shards of `shard_size` (None: one).
    Every seed is derived from `seed` (default: a fresh one from OS entropy, recorded
    in the card).

    With `cells_dir`, finished cells are stored there as they finish and a rerun
    computes only the missing ones (a folder of other settings, `identity` included,
    is refused; see `CellStore`). The cells run on `executor` (default: one after
    another in this process; `RayExecutor`: on a Ray cluster, `model` then best a
    `Resident` that loads it in each worker), with the same numbers. `progress`, if
    given, is called with (cells done, cells to compute, the key of the cell just
    done) at the start (key None) and after each cell.
    """
    budget = Budget(
        epsilon=epsilon,
        iterations=iterations,
        samples=samples,
        step_size=step_size,
        redraws=redraws,
        restarts=restarts,
        chunk_size=chunk_size,
        judge_chunk_size=judge_chunk_size,
    )
    settings = CardSettings(
        budget=budget,
        sweep_samples=tuple(sweep_samples),
        sweep_iterations=tuple(sweep_iterations),
        cosine_samples=tuple(cosine_samples),
        epsilons=tuple(epsilons),
        tolerance=tolerance,
        shard_size=shard_size,
    )
    images, labels = checked_inputs(model, config, images, labels)
    cells = card_cells(settings, len(images))
    store = None
    if cells_dir is None:
        root = root_seed(seed)
    else:
        record = {
            **(identity or {}),
            "card": settings.record(),
            "config": dataclasses.asdict(config),
            "inputs": inputs_digest(images, labels),
        }
        store = CellStore(cells_dir, record, seed)
        root = store.seed
    results: dict[str, CellResult] = {}
    if store is not None:
        for cell in cells:
            found = store.result(cell, redraws)
            if found is not None:
                results[cell.key] = found
    todo = [cell for cell in cells if cell.key not in results]
    report = progress or (lambda done, total, key: None)
    report(0, len(todo), None)
    resident = model if isinstance(model, Resident) else Resident.of(f"card-{uuid.uuid4()}", model)
    # Without a store, the attacks' adversarials wait in memory for `strongest`.
    kept: dict[str, tuple[np.ndarray, Redraws]] = {}

    def unit(cell: CardCell) -> Unit[CellResult]:
        attacks = None
        if cell.step == STRONGEST:
            attacks = {
                attack.step: _adversarials(attack, redraws, images.shape[1:], kept, store)
                for attack in cells
                if attack.step in ATTACKS and attack.shard == cell.shard
            }
        arguments = (resident, config, *shard_inputs(images, labels, cell), settings, root, cell)
        return Unit(cell.key, compute_cell, (*arguments, attacks))

    by_key = {cell.key: cell for cell in todo}
    # Each shard's `strongest` needs its attacks: it runs once every other cell is done.
    phases = [[c for c in todo if c.step != STRONGEST], [c for c in todo if c.step == STRONGEST]]
    done = 0
    for phase in phases:
        for outcome in (executor or LocalExecutor()).run(unit(cell) for cell in phase):
            cell, found = by_key[outcome.key], outcome.value
            if store is not None:
                store.add(cell, found, outcome.record())
            elif found.adversarials is not None:
                kept[cell.key] = (found.adversarials, found.judged)
            results[cell.key] = dataclasses.replace(found, adversarials=None)
            done += 1
            report(done, len(todo), cell.key)
    return assemble(
        settings,
        cells,
        results,
        name=config.name if name is None else name,
        seed=root,
        num_iterations=config.num_iterations,
        checkpoint_sha256=checkpoint_sha256,
    )


def _adversarials(
    cell: CardCell,
    redraws: int,
    image_shape: tuple[int, ...],
    computed: Mapping[str, tuple[np.ndarray, Redraws]],
    store: CellStore | None,
) -> tuple[np.ndarray, Redraws]:
    """An attack cell's adversarials and judgement: computed in this run, else stored."""
    if cell.key in computed:
        return computed[cell.key]
    stored = None if store is None else store.result(cell, redraws, image_shape)
    if stored is None or stored.adversarials is None:
        raise ValueError(f"{cell.key} was neither computed nor stored")
    return stored.adversarials, stored.judged
