"""The robustness card as cells: units of work, each a pure function of the model, the
defense config, one shard of the images and the card's settings, stored as they
finish so that an interrupted card resumes where it stopped.

Per image shard (`shard_size` images; default one shard of all), the cells are:
`clean`; one per attack of `protocol.ATTACKS`; `strongest` (per image the attack the
judgement found strongest, judged again on fresh redraws), which needs the shard's
attack cells; one per point of the sweeps over EOT samples, iterations and epsilon;
one per K of the gradient cosine. The card (`assemble`) joins the shards' results.

Every seed is derived from the root seed, the shard and the cell (`derive_seed`),
never from the order cells run in: a resumed card, or one whose cells ran on other
machines, has the numbers of a card computed in one go. Within a shard, the clean
images, every attack and every sweep point are judged with the same redraws, so that
their differences are the attacks', not the draws'.

A `CellStore` keeps finished cells in a folder: `settings.json` (what the cells were
made with, root seed included: a store of other settings is refused, naming what
differs), and per cell `<key>.json`, plus `<key>.npy` for an attack's adversarials,
each written atomically and read back bounded and checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from attacks.execution.resident import Resident
from attacks.kinds import check_count
from attacks.paper.cells import differences
from attacks.robustness.convergence import (
    EPSILONS,
    ITERATIONS,
    SAMPLES,
    TOLERANCE,
    check_counts,
    check_epsilons,
    check_tolerance,
    image_cosines,
    sweep_point,
)
from attacks.robustness.judgement import (
    Redraws,
    derive_seed,
    keep_strongest,
    redraw_accuracy,
    root_seed,
)
from attacks.robustness.protocol import ATTACKS, Budget, evaluate_attack
from defense.common.errors import InputError
from defense.common.files import (
    ensure_writable_dir,
    parse_json,
    read_bounded,
    read_text_bounded,
    reason,
    write_atomic,
    write_text_atomic,
)
from defense.config import DefenseConfig

CLEAN, STRONGEST, COSINE = "clean", "strongest", "cosine"
# Sweep parameter -> the `CardSettings` field holding its values.
SWEEPS = {"samples": "sweep_samples", "iterations": "sweep_iterations", "epsilon": "epsilons"}
SETTINGS_FILE = "settings.json"
# A finished cell's JSON: a few numbers and R x N booleans as text.
_MAX_CELL_BYTES = 64 << 20


@dataclass(frozen=True)
class CardSettings:
    """What decides a card's numbers besides the model, the config and the images.

    budget: the attacks' budget and the judgement's redraws. sweep_samples,
    sweep_iterations, epsilons: the points of the three APGD-EOT sweeps;
    cosine_samples: the K of the gradient cosine. tolerance: the accuracy change
    below which a sweep has converged. shard_size: images per shard (None: one shard).
    """

    budget: Budget = dataclasses.field(default_factory=Budget)
    sweep_samples: tuple[int, ...] = SAMPLES
    sweep_iterations: tuple[int, ...] = ITERATIONS
    cosine_samples: tuple[int, ...] = SAMPLES
    epsilons: tuple[float, ...] = EPSILONS
    tolerance: float = TOLERANCE
    shard_size: int | None = None

    def __post_init__(self) -> None:
        check_tolerance(self.tolerance)
        for name in ("sweep_samples", "sweep_iterations", "cosine_samples"):
            check_counts(name, getattr(self, name))
            object.__setattr__(self, name, tuple(int(value) for value in getattr(self, name)))
        check_epsilons(self.epsilons)
        object.__setattr__(self, "epsilons", tuple(float(value) for value in self.epsilons))
        if self.shard_size is not None:
            check_count("shard_size", self.shard_size, 1)

    def record(self) -> dict[str, Any]:
        """The settings as JSON values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class CardCell:
    """One unit of the card: a step (`clean`, an attack, `strongest`, a sweep parameter,
    `cosine`), its value (a sweep point or K; None for the others), and the shard of
    images [start, stop) it covers."""

    step: str
    value: float | None
    shard: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """The step and its value: `clean`, `eot_pgd`, `samples=5`, `epsilon=16`."""
        return self.step if self.value is None else f"{self.step}={self.value:g}"

    @property
    def key(self) -> str:
        """The cell's name in a store (and a file stem): `samples=5.shard0`."""
        return f"{self.name}.shard{self.shard}"


def card_cells(settings: CardSettings, count: int) -> list[CardCell]:
    """The cells of a card of `count` images, in an order that computes each shard's
    attacks before its `strongest` cell."""
    check_count("count", count, 1)
    size = settings.shard_size or count
    shards = [
        (shard, start, min(start + size, count))
        for shard, start in enumerate(range(0, count, size))
    ]
    steps: list[tuple[str, float | None]] = [(CLEAN, None), *((name, None) for name in ATTACKS)]
    steps.append((STRONGEST, None))
    for parameter, field in SWEEPS.items():
        steps += [(parameter, float(value)) for value in getattr(settings, field)]
    steps += [(COSINE, float(k)) for k in settings.cosine_samples]
    return [CardCell(step, value, *shard) for shard in shards for step, value in steps]


@dataclass(frozen=True, eq=False)
class CellResult:
    """What a cell found: the judgement's `correct` [R, N] (the cosine cell: `cosines` [N]
    instead), the seconds it took (an attack's: without the judgement), and an attack's
    `adversarials` (kept for its shard's `strongest` cell)."""

    seconds: float
    correct: np.ndarray | None = None
    cosines: np.ndarray | None = None
    adversarials: np.ndarray | None = None

    @property
    def judged(self) -> Redraws:
        """The judgement of a judged cell."""
        if self.correct is None:
            raise ValueError("a cosine cell has no judgement")
        return Redraws(self.correct)


def shard_seed(root: int, cell: CardCell) -> int:
    """The seed every draw of `cell`'s shard derives from."""
    return derive_seed(root, "shard", cell.shard)


def compute_cell(
    model: keras.Model | Resident[keras.Model],
    config: DefenseConfig,
    images: np.ndarray,
    labels: np.ndarray,
    settings: CardSettings,
    root: int,
    cell: CardCell,
    attacks: Mapping[str, tuple[np.ndarray, Redraws]] | None = None,
) -> CellResult:
    """Compute `cell` on its shard's `images` (float [-1, 1] NHWC) and `labels`, its seeds
    derived from the root seed `root`; a `strongest` cell takes its shard's `attacks`
    (name -> adversarials and their judgement). `model` may be a `Resident` (built once
    per worker process)."""
    if isinstance(model, Resident):
        model = model.get()
    budget = settings.budget
    seed = shard_seed(root, cell)
    judge_seed = derive_seed(seed, "judgement")

    def judged(adversarials: np.ndarray, judgement_seed: int) -> Redraws:
        return redraw_accuracy(
            model,
            config,
            adversarials,
            labels,
            redraws=budget.redraws,
            seed=judgement_seed,
            chunk_size=budget.judge_chunk_size,
        )

    start = time.perf_counter()
    if cell.step == CLEAN:
        return CellResult(time.perf_counter() - start, judged(images, judge_seed).correct)
    if cell.step in ATTACKS:
        found = evaluate_attack(
            cell.step, model, config, images, labels, budget, seed=seed, judge_seed=judge_seed
        )
        return CellResult(found.result.seconds, found.judged.correct, None, found.adversarials)
    if cell.step == STRONGEST:
        if attacks is None or set(attacks) != set(ATTACKS):
            raise ValueError(f"{cell.key} needs the adversarials of every attack of its shard")
        candidates = [attacks[name] for name in ATTACKS]
        picked = keep_strongest(
            [adversarials for adversarials, _ in candidates], [judged for _, judged in candidates]
        )
        correct = judged(picked, derive_seed(seed, STRONGEST)).correct
        return CellResult(time.perf_counter() - start, correct)
    assert cell.value is not None
    if cell.step == COSINE:
        cosines = image_cosines(
            model,
            config,
            images,
            labels,
            k=int(cell.value),
            seed=derive_seed(seed, COSINE),
            chunk_size=budget.chunk_size,
        )
        return CellResult(time.perf_counter() - start, None, cosines)
    judgement = sweep_point(
        cell.step,
        cell.value,
        model,
        config,
        images,
        labels,
        budget,
        seed=derive_seed(seed, "convergence"),
        judge_seed=judge_seed,
    )
    return CellResult(time.perf_counter() - start, judgement.correct)


def inputs_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """The SHA-256 of a card's images and labels (as float32 and int64 arrays)."""
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(images, np.float32), np.ascontiguousarray(labels, np.int64)):
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


class CellsError(InputError):
    """A store of cells that cannot be used: made with other settings, or damaged."""


class CellStore:
    """The finished cells of a card in `folder`, made with `settings` (JSON values).

    Opening it checks, before any cell runs: the folder is writable; a `settings.json`
    already there was written with the same settings, and with the root `seed` when
    one is given (else its seed is adopted, so that a resumed card keeps its draws);
    otherwise the settings and the root seed (`seed`, or a fresh one) are written."""

    def __init__(
        self, folder: str | os.PathLike, settings: Mapping[str, Any], seed: int | None
    ) -> None:
        self.folder = ensure_writable_dir(folder)
        path = self.folder / SETTINGS_FILE
        settings = json.loads(json.dumps(settings, sort_keys=True))
        if path.exists():
            stored = self._json(path)
            if not (isinstance(stored, dict) and isinstance(stored.get("seed"), int)):
                raise CellsError(
                    f"{path} was not written by a robustness card; give another folder"
                )
            changed = differences(stored.get("settings", {}), settings)
            if seed is not None and seed != stored["seed"]:
                changed.append(f"seed: {stored['seed']!r} in the file, {seed!r} now")
            if changed:
                raise CellsError(
                    f"{self.folder} holds cells made with other settings, which are not mixed "
                    "with this card's:\n  " + "\n  ".join(changed) + "\nGive another folder, or "
                    "the same settings to resume."
                )
            self.seed: int = stored["seed"]
        else:
            self.seed = root_seed(seed)
            text = json.dumps({"settings": settings, "seed": self.seed}, indent=2, sort_keys=True)
            write_text_atomic(path, text + "\n")

    def _json(self, path: Path) -> Any:
        try:
            return parse_json(read_text_bounded(path, max_bytes=_MAX_CELL_BYTES))
        except (OSError, ValueError) as error:
            raise CellsError(f"cannot read {path}: {reason(error)}; move it away") from error

    def result(
        self, cell: CardCell, redraws: int, image_shape: tuple[int, ...] | None = None
    ) -> CellResult | None:
        """The stored result of `cell` (None: not computed), checked against the cell's
        `redraws` and images; given the `image_shape` (H, W, C) of the card's images, an
        attack's adversarials too."""
        path = self.folder / f"{cell.key}.json"
        if not path.exists():
            return None
        record = self._json(path)
        count = cell.stop - cell.start
        try:
            seconds = float(record["seconds"])
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"seconds is {seconds}")
            if cell.step == COSINE:
                cosines = np.array(record["cosines"], np.float64)
                if cosines.shape != (count,) or not np.all(np.isfinite(cosines)):
                    raise ValueError(f"cosines are not {count} finite numbers")
                return CellResult(seconds, None, cosines)
            rows = record["correct"]
            if not (
                isinstance(rows, list)
                and len(rows) == redraws
                and all(
                    isinstance(row, str) and len(row) == count and set(row) <= {"0", "1"}
                    for row in rows
                )
            ):
                raise ValueError(f"correct is not {redraws} rows of {count} 0/1 digits")
        except (KeyError, TypeError, ValueError) as error:
            raise CellsError(
                f"{path} is not a finished cell ({reason(error)}); move it away"
            ) from error
        digits = np.frombuffer("".join(rows).encode("ascii"), np.uint8)
        correct = (digits == ord("1")).reshape(redraws, count)
        found = None
        if image_shape is not None and cell.step in ATTACKS:
            found = self._adversarials(cell, (count, *image_shape))
        return CellResult(seconds, correct, None, found)

    def _adversarials(self, cell: CardCell, shape: tuple[int, ...]) -> np.ndarray:
        path = self.folder / f"{cell.key}.npy"
        # float32 data and .npy's header (a few hundred bytes).
        size = 4 * math.prod(shape) + 4096
        try:
            array = np.load(io.BytesIO(read_bounded(path, max_bytes=size)), allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CellsError(f"cannot read {path}: {reason(error)}; move it away") from error
        if array.dtype != np.float32 or array.shape != shape:
            raise CellsError(
                f"{path} is not the adversarials of {cell.key} ({array.dtype} {array.shape}); "
                "move it away"
            )
        return array

    def add(self, cell: CardCell, result: CellResult, ran: Mapping[str, Any] | None = None) -> None:
        """Store a finished cell: its adversarials first, then its JSON (with `ran`: where
        and how it ran, e.g. worker, node, seconds, attempts), each atomically."""
        if result.adversarials is not None:
            adversarials = np.ascontiguousarray(result.adversarials, np.float32)
            write_atomic(
                self.folder / f"{cell.key}.npy",
                lambda handle: np.save(handle, adversarials, allow_pickle=False),
            )
        record: dict[str, Any] = {"cell": cell.key, "seconds": result.seconds}
        if ran is not None:
            record["ran"] = dict(ran)
        if result.cosines is not None:
            record["cosines"] = [float(value) for value in result.cosines]
        if result.correct is not None:
            record["correct"] = ["".join("1" if c else "0" for c in row) for row in result.correct]
        write_text_atomic(self.folder / f"{cell.key}.json", json.dumps(record) + "\n")


def shard_inputs(
    images: np.ndarray, labels: np.ndarray, cell: CardCell
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of `cell`'s shard."""
    return images[cell.start : cell.stop], labels[cell.start : cell.stop]


def cells_of(cells: Sequence[CardCell], step: str, value: float | None = None) -> list[CardCell]:
    """The cells (one per shard, in order) of `step` at `value`."""
    return [cell for cell in cells if cell.step == step and cell.value == value]
