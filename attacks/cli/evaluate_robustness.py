"""`evaluate_robustness`: the robustness card of a defended model on a dataset directory.

Runs `attacks.robustness.card.evaluate_robustness` (clean accuracy, every attack of
the card judged over redraws of the deployed defense, the strongest per image, the
APGD-EOT convergence sweeps over EOT samples and iterations, the EOT gradient cosine
against K and the budget sweep) on a registry model and its checkpoint (--model,
--checkpoint_path) or a model built in Python (--model_factory), and writes into
OUTPUT_DIR card.json (RobustBench's fields, the card, and the settings it was made
with), card.md (also printed) and the plots accuracy_vs_{epsilon,samples,iterations}
and gradient_cosine as PNG and PDF.

The card is computed in cells (per image shard of --shard_size: the clean accuracy,
each attack, each sweep point, each K), each stored in OUTPUT_DIR/cells as it
finishes: an interrupted run, rerun with the same flags, computes only the cells
still missing, with the same root seed (recorded; --seed may be left out).
With --executor=ray the cells run as Ray tasks (a local instance, or the cluster at
--ray_address), each worker loading the model once, with the same numbers; each
cell's worker, node, wall time and attempts are recorded in its cell file.

Every flag is checked, every image decoded and the labels checked against the
model's classes before any attack runs. A card.json made with the same settings is
reused (card.md and the plots are written again from it); a card.json or cells made
with other settings are refused, naming the differences.

Exit status: 0 when the card is written, 2 when nothing could run (bad flags,
dataset, labels, checkpoint, a card of other settings) or an output could not be
written, 130 when interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from absl import flags, logging

from attacks.execution import flags as execution_flags
from defense.common import cli
from defense.common.errors import ParameterError

if TYPE_CHECKING:
    from attacks.paper.models import ModelEntry
    from attacks.robustness.card import Card
    from defense.config import DefenseConfig

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", None, "Registry model (with --checkpoint_path), or one of the factory's."
)
flags.DEFINE_string("checkpoint_path", None, cli.CHECKPOINT_PATH_HELP)
flags.DEFINE_string(
    "model_factory",
    None,
    "MODULE:FUNCTION returning a model set (attacks.paper.models.ModelEntry by name) instead "
    "of a registry model, e.g. a small test model; --model picks among it (default: the first).",
)
flags.DEFINE_string(
    "config",
    None,
    "Defense config: challenge, paper, none or a .json; default paper for a registry model, "
    "the factory's own for a factory model.",
)
flags.DEFINE_string(
    "dataset_dir", None, "The dataset: PNGs of the model's input size (another size is refused)."
)
flags.DEFINE_string(
    "labels_file",
    None,
    "True labels (dataset CSV or `<filename>,<label>` lines); default DATASET_DIR/dataset.csv.",
)
flags.DEFINE_integer("limit", None, "Use only the first LIMIT images.")
flags.DEFINE_string("output_dir", None, "Where card.json, card.md and the plots go.")
flags.DEFINE_float("epsilon", 16.0, "L-infinity budget in pixel units, in (0, 255].")
flags.DEFINE_integer("redraws", 5, "Redraws of the deployed defense that judge each result.")
flags.DEFINE_integer("seed", None, "Root seed of every draw (default: fresh, recorded).")
flags.DEFINE_integer("iterations", 100, "Attack iterations (APGD) and steps (PGD).")
flags.DEFINE_integer("samples", 20, "EOT samples per attack step.")
flags.DEFINE_integer("restarts", 1, "AutoAttack-rand's APGD runs per loss (its rand version: 1).")
flags.DEFINE_integer(
    "shard_size", None, "Images per cell (default: all); a cell is the unit a rerun resumes from."
)
# The sweeps' defaults are the library's (attacks.robustness.convergence), which imports
# TensorFlow: --help stays fast.
flags.DEFINE_list("sweep_samples", None, "EOT samples of the sweep; default 1,2,5,10,20,50.")
flags.DEFINE_list("sweep_iterations", None, "Iterations of the sweep; default 10,25,50,100,200.")
flags.DEFINE_list("cosine_samples", None, "K of the gradient cosine; default 1,2,5,10,20,50.")
flags.DEFINE_list(
    "epsilons", None, "Epsilons of the budget sweep (pixel units); default 2,4,...,128,255."
)
flags.DEFINE_float("tolerance", 0.01, "Accuracy change below which a sweep has converged.")
flags.DEFINE_integer("chunk_size", None, "Attacks' EOT patterns per image per pass (memory).")
flags.DEFINE_integer("judge_chunk_size", 16, "Items per pass of the judgement (memory).")
flags.DEFINE_boolean("progress", True, "Show a progress bar over the card's cells on stderr.")

PROGRAM = "evaluate_robustness"
CARD_JSON, CARD_MARKDOWN, CELLS_DIR = "card.json", "card.md", "cells"
# How the library's parameters read as this command's flags.
FLAG_NAMES = {"labels": "labels_file", "models": "model"}


def _numbers(
    name: str, values: Sequence[str] | None, kind: type, default: Sequence[Any]
) -> list[Any]:
    """A comma list flag's values as `kind` (int or float); `default` when not given."""
    if values is None:
        return list(default)
    try:
        return [kind(value) for value in values]
    except ValueError:
        raise ParameterError(
            f"{name} must be a comma list of {kind.__name__}s, got {','.join(values)}", name
        ) from None


def _options() -> dict[str, Any]:
    """The card's settings from the flags, each checked (raises `ParameterError`)."""
    from attacks.kinds import check_count
    from attacks.robustness.cells import CardSettings
    from attacks.robustness.convergence import EPSILONS, ITERATIONS, SAMPLES
    from attacks.robustness.protocol import Budget

    options = {
        "epsilon": FLAGS.epsilon,
        "redraws": FLAGS.redraws,
        "iterations": FLAGS.iterations,
        "samples": FLAGS.samples,
        "restarts": FLAGS.restarts,
        "sweep_samples": _numbers("sweep_samples", FLAGS.sweep_samples, int, SAMPLES),
        "sweep_iterations": _numbers("sweep_iterations", FLAGS.sweep_iterations, int, ITERATIONS),
        "cosine_samples": _numbers("cosine_samples", FLAGS.cosine_samples, int, SAMPLES),
        "epsilons": _numbers("epsilons", FLAGS.epsilons, float, EPSILONS),
        "tolerance": FLAGS.tolerance,
        "chunk_size": FLAGS.chunk_size,
        "judge_chunk_size": FLAGS.judge_chunk_size,
        "shard_size": FLAGS.shard_size,
    }
    CardSettings(
        budget=Budget(
            epsilon=options["epsilon"],
            iterations=options["iterations"],
            samples=options["samples"],
            redraws=options["redraws"],
            restarts=options["restarts"],
            chunk_size=options["chunk_size"],
            judge_chunk_size=options["judge_chunk_size"],
        ),
        sweep_samples=options["sweep_samples"],
        sweep_iterations=options["sweep_iterations"],
        cosine_samples=options["cosine_samples"],
        epsilons=options["epsilons"],
        tolerance=options["tolerance"],
        shard_size=options["shard_size"],
    )
    if FLAGS.limit is not None:
        check_count("limit", FLAGS.limit, 1)
    if FLAGS.seed is not None and FLAGS.seed < 0:
        raise ParameterError(f"seed must be >= 0, got {FLAGS.seed}", "seed")
    return options


def _model_entry() -> tuple[ModelEntry, DefenseConfig]:
    """The model (factory or registry with its checkpoint) and the defense config."""
    from attacks.paper.models import ModelEntry, choose, load_factory
    from defense import models
    from defense.config import load_config
    from defense.labels import class_names
    from defense.loading import checkpoint_location, load_defended
    from defense.models.checkpoint import checkpoint_digest

    if FLAGS.model_factory:
        if FLAGS.checkpoint_path:
            raise ParameterError(
                "give checkpoint_path with model, not model_factory",
                "checkpoint_path",
                "model_factory",
            )
        chosen = choose(load_factory(FLAGS.model_factory), [FLAGS.model] if FLAGS.model else None)
        entry = next(iter(chosen.values()))
        return entry, load_config(FLAGS.config) if FLAGS.config else entry.config
    if not FLAGS.model:
        raise ParameterError("give model (a registry model) or model_factory", "model")
    spec = models.get_spec(FLAGS.model)
    config = load_config(FLAGS.config or "paper")
    checkpoint = checkpoint_location(spec, FLAGS.checkpoint_path or None)
    entry = ModelEntry(
        name=spec.name,
        load=lambda: load_defended(spec, checkpoint, config=config).model,
        weights=checkpoint_digest(checkpoint),
        input_size=spec.default_image_size,
        out_size=config.out_size,
        config=config,
        class_names=class_names(),
        first_label=1,
    )
    return entry, config


def _recorded(path: Path, settings: dict[str, Any], seed: int | None) -> Card | None:
    """The card of a finished card.json made with these settings (None: there is none);
    raises `InputError` naming the differences when it was made with others."""
    from attacks.paper.cells import differences, normalized
    from attacks.robustness.card import Card
    from defense.common.errors import InputError
    from defense.common.files import parse_json, read_text_bounded

    if not path.exists():
        return None
    try:
        text = read_text_bounded(path)
        stored = parse_json(text)["settings"]
        card = Card.from_json(text)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"{path} is not a card this command wrote ({error}); give another --output_dir"
        ) from error
    changed = differences(stored, normalized(settings))
    if seed is not None and seed != card.seed:
        changed.append(f"seed: {card.seed!r} in the file, {seed!r} now")
    if changed:
        raise InputError(
            f"{path} holds a card made with other settings:\n  "
            + "\n  ".join(changed)
            + "\nGive another --output_dir, or the same settings to reuse it."
        )
    return card


def main(argv: list[str]) -> int:
    """Compute (or reuse) the card and write it with its plots."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not (FLAGS.dataset_dir and FLAGS.output_dir):
        return cli.fail(PROGRAM, "--dataset_dir and --output_dir are required")
    cli.import_tensorflow()
    import dataclasses

    from tqdm import tqdm

    from attacks.execution.resident import Resident
    from attacks.paper.data import read_image_set
    from attacks.robustness.card import evaluate_robustness
    from attacks.robustness.cells import CellsError
    from attacks.robustness.judgement import checked_inputs
    from attacks.robustness.plots import write_plots
    from defense.common.errors import InputError
    from defense.common.files import ensure_writable_dir, write_text_atomic
    from defense.common.images import to_model_input
    from defense.models import CheckpointError

    try:
        options = _options()
        execution_flags.check_executor_flags()
        entry, config = _model_entry()
        labels_file = Path(FLAGS.labels_file or Path(FLAGS.dataset_dir) / "dataset.csv")
        dataset = read_image_set(
            FLAGS.dataset_dir,
            labels_file,
            first_label=entry.first_label,
            num_classes=len(entry.class_names) - entry.first_label,
            size=entry.input_size,
        ).limited(FLAGS.limit)
        output = ensure_writable_dir(FLAGS.output_dir)
        settings = {
            "model": entry.name,
            "weights": entry.weights,
            "config": dataclasses.asdict(config),
            "images": dataset.digest,
            **options,
        }
        card = _recorded(output / CARD_JSON, settings, FLAGS.seed)
        if card is None:
            executor = execution_flags.executor_from_flags()
            model = entry.load()
            # Ray's workers load the model themselves, once per worker process.
            attacked = (
                Resident(f"{entry.name}:{entry.weights}", entry.load)
                if FLAGS.executor == "ray"
                else model
            )
            images, labels = checked_inputs(
                model,
                config,
                to_model_input(dataset.pixels(0, len(dataset), entry.input_size)),
                list(dataset.labels),
            )
    except (ValueError, InputError, CheckpointError) as error:
        return cli.fail(PROGRAM, error, flag_names=FLAG_NAMES)
    digest = entry.weights.removeprefix("sha256:") if entry.weights.startswith("sha256:") else None
    if card is None:
        logging.info("computing the card of %s on %d image(s)", entry.name, len(dataset))

        bar = tqdm(unit="cell", disable=not FLAGS.progress, dynamic_ncols=True)

        def progress(done: int, total: int, key: str | None) -> None:
            """The bar over the cells left to compute, with ETA, driven by completions."""
            if key is None:
                logging.info("%d cell(s) to compute in %s", total, output / CELLS_DIR)
                bar.reset(total=total)
            else:
                bar.set_postfix_str(key)
                bar.update()

        def compute() -> Card | CellsError:
            """The card; unusable cells are returned, to be reported as such (not as a
            failed write)."""
            try:
                return evaluate_robustness(
                    attacked,
                    config,
                    images,
                    labels,
                    seed=FLAGS.seed,
                    name=entry.name,
                    checkpoint_sha256=digest,
                    cells_dir=output / CELLS_DIR,
                    identity=settings,
                    executor=executor,
                    progress=progress,
                    **options,
                )
            except CellsError as error:
                return error

        try:
            outcome = cli.run_writing(PROGRAM, output, compute)
        finally:
            bar.close()
            executor.close()
        if isinstance(outcome, int):
            return outcome
        if isinstance(outcome, CellsError):
            return cli.fail(PROGRAM, outcome)
        card = outcome
        fields = {**json.loads(card.to_json()), "settings": settings}
        text = json.dumps(fields, indent=2) + "\n"
        written = cli.run_writing(
            PROGRAM, output, lambda: write_text_atomic(output / CARD_JSON, text)
        )
        if written is not None:
            return written
    else:
        logging.info("reusing the finished card in %s (same settings)", output / CARD_JSON)
    markdown = card.to_markdown()
    print(markdown)

    def write() -> list[Path]:
        write_text_atomic(output / CARD_MARKDOWN, markdown)
        return [output / CARD_JSON, output / CARD_MARKDOWN, *write_plots(card, output)]

    paths = cli.run_writing(PROGRAM, output, write)
    if isinstance(paths, int):
        return paths
    logging.info("wrote %s", ", ".join(map(str, paths)))
    return cli.EXIT_OK


def run() -> None:
    """Console entry point `evaluate_robustness`."""
    cli.run_program(main, __name__, PROGRAM)
