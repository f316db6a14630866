"""A reproduction run: the cells of the chosen tables, the missing ones computed with a
progress bar over cells, then the tables in the paper's layout and the figures.

Cells run model by model (one model in memory at a time). Every finished cell is
stored at once (`attacks.paper.cells`), so an interruption keeps all but the
running cell and a rerun computes only what is missing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
from absl import logging
from tqdm import tqdm

from attacks.catalog import DEFENSE, get_attack
from attacks.execution.executor import Executor, LocalExecutor, Unit, refuse_unshared
from attacks.execution.resident import Resident
from attacks.paper import plots
from attacks.paper.cells import RESULTS_FILE, SOURCES, Cell, ResultsFile, pending
from attacks.paper.compute import CellResult, attack_example, compute_cell, scenario_of
from attacks.paper.data import ImageSet
from attacks.paper.models import ModelEntry, ModelSet
from attacks.paper.tables import (
    ADAPTIVE_ROWS,
    ATTACK_ROWS,
    CLEAN,
    EOT_CHUNK_SIZE,
    SUBSET_IMAGES,
    TABLES,
    Column,
    PaperTable,
    override_key,
    render_table,
    row_attack,
    row_title,
)
from defense.common.errors import ParameterError
from defense.common.files import ensure_writable_dir, write_text_atomic

TABLES_FILE, PLOTS_DIR = "tables.txt", "plots"
# Clean images are the dataset's PNGs: float and PNG judging are the same, so one cell.
CLEAN_SOURCE = "png"
# The seeds numpy and Keras take: 0..2**32-1.
MAX_SEED = 2**32 - 1
SOURCE_NOTES = {
    "float": "float adversarials (before rounding to PNG)",
    "png": "PNG-rounded adversarials (uint8, as the competition sees them)",
}


@dataclass(frozen=True)
class RunOptions:
    """What a run computes and how: tables, rows, the adversarials judged, the defense
    runs and seed, image counts, and settings that replace the paper's."""

    tables: Sequence[int]
    rows: Sequence[str] = ATTACK_ROWS
    source: str = "float"
    runs: int = 3
    seed: int | None = 0
    batch_size: int = 16
    chunk_size: int | None = EOT_CHUNK_SIZE
    limit: int | None = None
    subset_size: int = SUBSET_IMAGES
    subset_seed: int = 0
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown or not self.tables:
            raise ParameterError(f"tables must be among {list(TABLES)}, got {unknown}", "tables")
        if self.source not in SOURCES:
            raise ParameterError(f"source must be one of {SOURCES}, got {self.source!r}", "source")
        for name, value, low in (
            ("runs", self.runs, 1),
            ("batch_size", self.batch_size, 1),
            ("subset_size", self.subset_size, 1),
            ("limit", self.limit, 1),
            ("chunk_size", self.chunk_size, 1),
        ):
            if value is not None and value < low:
                raise ParameterError(f"{name} must be >= {low}, got {value}", name)
        for name, seed in (("seed", self.seed), ("subset_seed", self.subset_seed)):
            if seed is not None and not 0 <= seed <= MAX_SEED:
                raise ParameterError(f"{name} must be in 0..{MAX_SEED}, got {seed}", name)


@dataclass(frozen=True)
class ImageSets:
    """The whole dataset (Tables 1-3) and its subset (Tables 4-6)."""

    dataset: ImageSet
    subset: ImageSet

    def of(self, table: PaperTable, limit: int | None) -> ImageSet:
        """The images a table is computed on: its set, limited."""
        return (self.subset if table.subset else self.dataset).limited(limit)


def resolved_params(
    entry: ModelEntry, row: str, attack: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Every setting of `row`'s attack as it will run on the model of `entry`, checked
    before any cell runs. A bad value raises a `ParameterError` naming the setting as
    an override key (fgsm-2.epsilon), the way it is given here, not as the attack's
    own parameter (epsilon)."""
    try:
        resolved = get_attack(attack).resolved(params)
    except ParameterError as error:
        raise ParameterError(
            error.spelled(lambda name: override_key(row, name)),
            *(override_key(row, name) for name in error.parameters),
        ) from error
    classes = len(entry.class_names)
    if attack == "deepfool" and resolved["nb_candidate"] > classes:
        key = override_key(row, "nb_candidate")
        raise ParameterError(
            f"{key} must be at most the {classes} classes of model {entry.name!r}, "
            f"got {resolved['nb_candidate']}",
            key,
        )
    return resolved


def cell_settings(
    entry: ModelEntry, table: PaperTable, row: str, options: RunOptions
) -> dict[str, Any]:
    """Everything besides the coordinates and images that decides a cell's numbers."""
    randomized = scenario_of(entry, table.scenario).randomized_defense
    attack, params = row_attack(row, randomized=randomized, overrides=options.overrides)
    settings: dict[str, Any] = {
        "scenario": table.scenario,
        "attack": attack,
        "params": resolved_params(entry, row, attack, params) if attack is not None else {},
        "weights": entry.weights,
        "input_size": entry.input_size,
        "out_size": entry.out_size,
        "config": dataclasses.asdict(entry.config),
        "runs": options.runs if randomized else 1,
        "seed": options.seed,
    }
    if randomized and attack is not None and get_attack(attack).target == DEFENSE:
        # EOT-PGD and APGD-EOT: the randomized defense draws its patterns in these chunks.
        settings["chunk_size"] = options.chunk_size
    return settings


def plan(models: ModelSet, sets: ImageSets, options: RunOptions) -> list[Cell]:
    """Every cell of the run, model by model, then table by table, in the rows' order."""
    cells = []
    for name, entry in models.items():
        for number in options.tables:
            table = TABLES[number]
            images = sets.of(table, options.limit)
            for row in table.rows(options.rows):
                cells.append(
                    Cell(
                        table=number,
                        model=name,
                        row=row,
                        source=CLEAN_SOURCE if row == CLEAN else options.source,
                        images=images.digest,
                        count=len(images),
                        settings=cell_settings(entry, table, row, options),
                    )
                )
    return cells


def check_shared(sets: ImageSets, executor: Executor) -> None:
    """Refuse, before any cell, a run whose workers would not read the images the driver
    read: every node must see each image of the dataset and the subset, same digest."""
    problems: dict[str, list[str]] = {}
    for images in (sets.dataset, sets.subset):
        for node, unseen in executor.on_every_node(ImageSet.unseen, images).items():
            known = problems.setdefault(node, [])
            known.extend(name for name in unseen if name not in known)
    refuse_unshared(problems, "the dataset", "dataset_dir (and subset_dir)")


def resident(entry: ModelEntry) -> Resident[keras.Model]:
    """Model `entry` as a process keeps it: loaded on first use, one model at a time."""
    return Resident(f"{entry.name}:{entry.weights}", entry.load)


def compute_pending(
    cells: Sequence[Cell],
    results: ResultsFile,
    models: ModelSet,
    sets: ImageSets,
    options: RunOptions,
    *,
    progress: bool = True,
    executor: Executor | None = None,
) -> int:
    """Compute every cell without a result on `executor` (default: one after another
    in this process) and store each as it finishes (only this process writes the
    results file); return how many were computed."""
    executor = executor or LocalExecutor()
    todo = pending(cells, results)
    by_key = {str(cell.key): cell for cell in todo}
    shown = progress and sys.stderr.isatty()
    with tqdm(total=len(todo), unit="cell", disable=not shown, dynamic_ncols=True) as bar:

        def unit(cell: Cell) -> Unit[CellResult]:
            entry = models[cell.model]
            images = sets.of(TABLES[cell.table], options.limit)
            advance = None
            if isinstance(executor, LocalExecutor):
                bar.set_description(cell.describe())
                done = [0]

                def advance(count: int, done: list[int] = done, total: int = len(images)) -> None:
                    done[0] += count
                    bar.set_postfix_str(f"{done[0]}/{total} images")

            arguments = {
                "scenario": cell.settings["scenario"],
                "attack": cell.settings["attack"],
                "params": dict(cell.settings["params"]),
                "on_defense": cell.row in ADAPTIVE_ROWS,
                "source": cell.source,
                "images": images,
                "runs": options.runs,
                "seed": options.seed,
                "batch_size": options.batch_size,
                "chunk_size": options.chunk_size,
                "progress": advance,
            }
            return Unit(str(cell.key), compute_cell_of, (resident(entry), entry, arguments))

        for outcome in executor.run(unit(cell) for cell in todo):
            cell, result = by_key[outcome.key], outcome.value
            results.add(cell, dataclasses.asdict(result), outcome.record())
            logging.info(
                "%s: target %.1f%%, defense %.1f%% (%.0f s)",
                cell.describe(),
                100 * result.target,
                100 * result.defense,
                result.seconds,
            )
            bar.update()
    return len(todo)


def compute_cell_of(
    model: Resident[keras.Model], entry: ModelEntry, arguments: Mapping[str, Any]
) -> CellResult:
    """`compute_cell` with its keyword arguments as one mapping (a unit of work)."""
    return compute_cell(model, entry, **arguments)


def _notes(
    table: PaperTable, cells: Sequence[Cell], models: ModelSet, options: RunOptions
) -> list[str]:
    """The lines under a table's heading: images, adversarials, defense, changed settings."""
    count = cells[0].count if cells else 0
    kind = "subset" if table.subset else "dataset"
    notes = [f"{count} images of the {kind} (the paper: {table.paper_images})"]
    if not table.clean:
        notes.append(f"judged on {SOURCE_NOTES[options.source]}")
    configs = {e.config.name: e.config for e in models.values()}
    if scenario_of(next(iter(models.values())), table.scenario).randomized_defense:
        described = "; ".join(
            f"{c.name} config (sizes {c.low}..{c.high - 1} padded to {c.out_size}, "
            f"{c.num_iterations} pattern(s) per run)"
            for c in configs.values()
        )
        notes.append(f"defense: {described}, {options.runs} runs averaged, seed {options.seed}")
    else:
        notes.append("defense: the scenario's fixed pattern (Section 4.6), run once")
    changed = [
        f"{row}.{name}={value}"
        for row, params in options.overrides.items()
        for name, value in params.items()
        if any(cell.row == row for cell in cells)
    ]
    if changed:
        notes.append(f"settings not the paper's: {', '.join(changed)}")
    return notes


@dataclass(frozen=True)
class RenderedTable:
    """A table as text, and what its figure needs."""

    table: PaperTable
    text: str
    columns: list[Column]
    measured: dict[tuple[str, str], tuple[float, float] | None]
    rows: list[tuple[str, str]]


def render(
    cells: Sequence[Cell], results: ResultsFile, models: ModelSet, options: RunOptions
) -> list[RenderedTable]:
    """Every table of the run in the paper's layout, from the stored results."""
    rendered = []
    columns = [Column(name, entry.label, entry.paper) for name, entry in models.items()]
    for number in options.tables:
        table = TABLES[number]
        mine = [cell for cell in cells if cell.table == number]
        measured: dict[tuple[str, str], tuple[float, float] | None] = {}
        labels: dict[str, str] = {}
        randomized = scenario_of(next(iter(models.values())), table.scenario).randomized_defense
        for cell in mine:
            record = results.result(cell)
            measured[(cell.model, cell.row)] = (
                None if record is None else (record["target"], record["defense"])
            )
            labels.setdefault(
                cell.row,
                row_title(cell.settings["attack"], cell.settings["params"], randomized=randomized),
            )
        rows = [(row, labels[row]) for row in table.rows(options.rows)]
        text = render_table(table, columns, measured, rows, _notes(table, mine, models, options))
        rendered.append(RenderedTable(table, text, columns, measured, rows))
    return rendered


def write_outputs(rendered: Sequence[RenderedTable], output_dir: str | os.PathLike) -> list[Path]:
    """tables.txt and the per-table figures (PNG and PDF) in output_dir/plots."""
    output = Path(output_dir)
    write_text_atomic(output / TABLES_FILE, "\n\n".join(r.text for r in rendered) + "\n")
    folder = ensure_writable_dir(output / PLOTS_DIR)
    paths = [output / TABLES_FILE]
    for item in rendered:
        figure = plots.table_figure(item.table, item.columns, item.measured, item.rows)
        paths += plots.save(figure, folder / f"table{item.table.number}")
    return paths


def check_figure(
    models: ModelSet,
    images: ImageSet,
    model_name: str,
    image_name: str,
    row: str,
    overrides: Mapping[str, Mapping[str, Any]],
) -> None:
    """Refuse a triptych of a model, image or attack row the run does not have, or
    whose settings the model cannot take."""
    if model_name not in models:
        raise ParameterError(
            f"figure_model {model_name!r} is not a model of this run ({', '.join(models)})",
            "figure_model",
        )
    if image_name not in images.names:
        raise ParameterError(f"figure_image {image_name!r} is not in the dataset", "figure_image")
    if row not in ATTACK_ROWS or row in ADAPTIVE_ROWS:
        choices = ", ".join(r for r in ATTACK_ROWS if r not in ADAPTIVE_ROWS)
        raise ParameterError(f"figure_attack must be one of {choices}", "figure_attack")
    attack, params = row_attack(row, randomized=True, overrides=overrides)
    assert attack is not None, "attack rows have an attack"
    resolved_params(models[model_name], row, attack, params)


def write_figure(
    models: ModelSet,
    model_name: str,
    images: ImageSet,
    image_name: str,
    row: str,
    options: RunOptions,
    output_dir: str | os.PathLike,
) -> list[Path]:
    """The Figure-1 triptych (plots/figure1.png and .pdf) of one image attacked by `row`
    on `model_name` in the vanilla scenario."""
    check_figure(models, images, model_name, image_name, row, options.overrides)
    entry = models[model_name]
    index = images.names.index(image_name)
    attack, params = row_attack(row, randomized=True, overrides=options.overrides)
    assert attack is not None, "attack rows have an attack"
    example = attack_example(
        resident(entry).get(),
        entry,
        attack=attack,
        params=params,
        pixels=images.pixels(index, index + 1, entry.input_size)[0],
        label=images.labels[index],
        seed=options.seed,
    )
    names = entry.class_names
    figure = plots.triptych(
        example.clean,
        example.adversarial,
        clean_class=names[example.clean_label],
        adversarial_class=names[example.adversarial_label],
        defense_class=names[example.defense_label],
        attack=row_title(attack, params),
    )
    folder = ensure_writable_dir(Path(output_dir) / PLOTS_DIR)
    return plots.save(figure, folder / "figure1")


def results_path(output_dir: str | os.PathLike) -> Path:
    """Where a run's results file lives."""
    return Path(output_dir) / RESULTS_FILE
