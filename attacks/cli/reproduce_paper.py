"""`reproduce_paper`: the paper's Tables 1-6 computed from a dataset directory and checkpoints.

Every cell of a table's layout (models x attack rows, target model and defense
model; Table 1: clean accuracy without and with randomization) is computed with
the paper's settings: FGSM 2/5/10, DeepFool and C&W on the table's scenario, the
`paper` defense config, 3 runs averaged, float adversarials (--source=png judges
the uint8-rounded ones); plus two adaptive rows, EOT-PGD and APGD-EOT on the defense
itself.
Tables 4-6 use a 500-image subset (--subset_dir, or drawn from the dataset with
--subset_seed). Before any cell runs, every image is decoded (one of another size
than the models' input is refused, not resized; a grayscale one is converted with a
warning), the results file is checked, and the overrides are checked against the
models (a bad one is named as its --override=ROW.PARAM key).

Each finished cell is stored at once in OUTPUT_DIR/results.jsonl, so a rerun
computes only the missing cells; a results file made with other settings is
refused, not mixed. With --executor=ray the cells run as Ray tasks (a local
instance, or the cluster at --ray_address; workers load each model once), with the
same results; each line records the cell's worker, node, wall time and attempts.
Writes OUTPUT_DIR/tables.txt (each table in the paper's
layout with the paper's number and the difference beside every cell, also printed),
OUTPUT_DIR/plots/table<N>.{png,pdf} (grouped bars) and plots/figure1.{png,pdf}
(a Figure-1 triptych of one image).

Exit status: 0 when every cell is done, 2 when nothing could run (bad flags,
dataset, labels, checkpoints, a results file of other settings) or an output
could not be written, 130 when interrupted; finished cells are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from absl import flags, logging

from attacks.execution import flags as execution_flags
from attacks.paper.tables import (
    ADAPTIVE_ROWS,
    ATTACK_ROWS,
    EOT_CHUNK_SIZE,
    PAPER_MODELS,
    SUBSET_IMAGES,
    TABLES,
    override_keys,
    parse_overrides,
    parse_rows,
    parse_tables,
)
from defense.common import cli
from defense.common.errors import ParameterError

FLAGS = flags.FLAGS
flags.DEFINE_list("table", None, f"Tables to reproduce, among {', '.join(map(str, TABLES))}.")
flags.DEFINE_boolean("all", False, "Reproduce every table (1-6).")
flags.DEFINE_string(
    "dataset_dir",
    None,
    "The dataset: PNGs of the models' input size (299x299 for the paper's) that the models "
    "classify correctly (make_dataset --select_correct); another size is refused.",
)
flags.DEFINE_string(
    "labels_file",
    None,
    "True labels (dataset CSV or `<filename>,<label>` lines); default DATASET_DIR/dataset.csv.",
)
flags.DEFINE_string(
    "subset_dir",
    None,
    "The 500-image subset of Tables 4-6 (labels from its dataset.csv, else --labels_file); "
    "default: --subset_size images drawn from the dataset with --subset_seed.",
)
flags.DEFINE_integer("subset_size", SUBSET_IMAGES, "Images of the drawn subset.")
flags.DEFINE_integer("subset_seed", 0, "Seed of the drawn subset.")
flags.DEFINE_string("output_dir", None, "Where results.jsonl, tables.txt and plots/ go.")
flags.DEFINE_list("models", None, f"Registry models; default {','.join(PAPER_MODELS)}.")
flags.DEFINE_string(
    "checkpoint_dir",
    None,
    f"Folder of the slim checkpoints; default ${cli.CHECKPOINT_DIR_ENV}, "
    f"else ./{cli.DEFAULT_CHECKPOINT_DIR}.",
)
flags.DEFINE_string(
    "model_factory",
    None,
    "MODULE:FUNCTION returning a model set (attacks.paper.models.ModelEntry by name) "
    "instead of registry models, e.g. a small test model; --models then picks among it.",
)
flags.DEFINE_string("config", "paper", "Defense config of the registry models (the paper's).")
flags.DEFINE_list("attacks", None, f"Attack rows; default all of {','.join(ATTACK_ROWS)}.")
flags.DEFINE_integer("limit", None, "Use only the first LIMIT images of each table's set.")
flags.DEFINE_enum(
    "source",
    "float",
    ["float", "png"],
    "Judge the float adversarials (the paper's) or their uint8 PNG rounding.",
)
flags.DEFINE_integer("runs", 3, "Defense runs with fresh patterns, averaged.")
flags.DEFINE_integer("seed", 0, "Seed of the defense's patterns and the attacks' randomness.")
flags.DEFINE_integer("batch_size", 16, "Images per batch.")
flags.DEFINE_integer(
    "chunk_size",
    EOT_CHUNK_SIZE,
    "EOT-PGD and APGD-EOT: patterns per image per forward pass (bounds memory; recorded "
    "with their cells).",
)
flags.DEFINE_multi_string(
    "override",
    [],
    "ROW.PARAM=VALUE: replace a row's attack setting (e.g. cw.max_iterations=100); "
    "recorded with each cell. Repeatable.",
)
flags.DEFINE_boolean("figure", True, "Draw the Figure-1 triptych.")
flags.DEFINE_string("figure_image", None, "Image of the triptych; default the dataset's first.")
flags.DEFINE_string("figure_model", None, "Model of the triptych; default the first model.")
flags.DEFINE_enum(
    "figure_attack",
    "fgsm-10",
    [row for row in ATTACK_ROWS if row not in ADAPTIVE_ROWS],
    "Attack row of the triptych.",
)
flags.DEFINE_boolean("progress", True, "Show a progress bar over the cells on stderr.")

PROGRAM = "reproduce_paper"
# How the library's parameters read as this command's flags: a row's attack setting
# (fgsm-2.epsilon) is given by --override, so an error names it as an override.
FLAG_NAMES = {
    "tables": "table",
    "overrides": "override",
    **{key: f"override={key}=..." for key in override_keys()},
}


def _label_space(models: Mapping[str, Any]) -> tuple[int, int]:
    """(first label, number of classes) every model of the set can take."""
    first = max(entry.first_label for entry in models.values())
    last = min(len(entry.class_names) - 1 for entry in models.values())
    return first, last - first + 1


def _input_size(models: Mapping[str, Any]) -> int:
    """The size x size of the dataset's images: the models' input size, which they share."""
    sizes = {entry.input_size for entry in models.values()}
    if len(sizes) > 1:
        raise ParameterError(
            f"models take images of different sizes ({', '.join(map(str, sorted(sizes)))}); "
            "the dataset's images are one size: run them separately",
            "models",
        )
    return sizes.pop()


def main(argv: list[str]) -> int:
    """Compute the missing cells of the chosen tables and write the tables and plots."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not (FLAGS.dataset_dir and FLAGS.output_dir):
        return cli.fail(PROGRAM, "--dataset_dir and --output_dir are required")
    try:
        if FLAGS.all and FLAGS.table:
            raise ParameterError("give tables or all, not both", "tables", "all")
        if not (FLAGS.all or FLAGS.table):
            raise ParameterError("no tables given: tables=1,...,6 or all", "tables", "all")
        tables = parse_tables(["all"] if FLAGS.all else FLAGS.table)
        rows = parse_rows(FLAGS.attacks) if FLAGS.attacks is not None else list(ATTACK_ROWS)
        overrides = parse_overrides(FLAGS.override)
        execution_flags.check_executor_flags()
    except ValueError as error:
        return cli.fail(PROGRAM, error, flag_names=FLAG_NAMES)
    cli.import_tensorflow()
    from pathlib import Path

    from attacks.paper.cells import ResultsFile, pending
    from attacks.paper.data import read_image_set
    from attacks.paper.models import choose, load_factory, registry_models
    from attacks.paper.run import (
        ImageSets,
        RunOptions,
        check_figure,
        check_shared,
        compute_pending,
        plan,
        render,
        results_path,
        write_figure,
        write_outputs,
    )
    from defense.common.errors import InputError
    from defense.common.files import ensure_writable_dir
    from defense.config import load_config
    from defense.models import CheckpointError

    try:
        options = RunOptions(
            tables=tables,
            rows=rows,
            source=FLAGS.source,
            runs=FLAGS.runs,
            seed=FLAGS.seed,
            batch_size=FLAGS.batch_size,
            chunk_size=FLAGS.chunk_size,
            limit=FLAGS.limit,
            subset_size=FLAGS.subset_size,
            subset_seed=FLAGS.subset_seed,
            overrides=overrides,
        )
        if FLAGS.model_factory:
            models = choose(load_factory(FLAGS.model_factory), FLAGS.models)
        else:
            models = registry_models(
                FLAGS.models or PAPER_MODELS,
                FLAGS.checkpoint_dir or cli.checkpoint_dir(),
                load_config(FLAGS.config),
            )
        first_label, num_classes = _label_space(models)
        size = _input_size(models)
        labels_file = Path(FLAGS.labels_file or Path(FLAGS.dataset_dir) / "dataset.csv")
        dataset = read_image_set(
            FLAGS.dataset_dir,
            labels_file,
            first_label=first_label,
            num_classes=num_classes,
            size=size,
        )
        subset = dataset.subset(options.subset_size, options.subset_seed)
        wants_subset = any(TABLES[number].subset for number in tables)
        if wants_subset and len(subset) == len(dataset) and not FLAGS.subset_dir:
            logging.warning(
                "the dataset has %d images, not more than --subset_size=%d: Tables 4-6 use all",
                len(dataset),
                options.subset_size,
            )
        if FLAGS.subset_dir:
            own = Path(FLAGS.subset_dir) / "dataset.csv"
            subset = read_image_set(
                FLAGS.subset_dir,
                own if own.is_file() else labels_file,
                first_label=first_label,
                num_classes=num_classes,
                size=size,
            )
        sets = ImageSets(dataset, subset)
        figure_model = FLAGS.figure_model or next(iter(models))
        figure_image = FLAGS.figure_image or dataset.names[0]
        if FLAGS.figure:
            check_figure(
                models, dataset, figure_model, figure_image, FLAGS.figure_attack, overrides
            )
        output = ensure_writable_dir(FLAGS.output_dir)
        results = ResultsFile(results_path(output))
        cells = plan(models, sets, options)
        results.check(cells)
        executor = execution_flags.executor_from_flags()
        check_shared(sets, executor)
    except (ValueError, InputError, CheckpointError) as error:
        return cli.fail(PROGRAM, error, flag_names=FLAG_NAMES)
    todo = pending(cells, results)
    logging.info(
        "%d cell(s): %d finished before (kept), %d to compute; results in %s",
        len(cells),
        len(cells) - len(todo),
        len(todo),
        results.path,
    )
    try:
        outcome = cli.run_writing(
            PROGRAM,
            results.path,
            lambda: (
                compute_pending(
                    cells,
                    results,
                    models,
                    sets,
                    options,
                    progress=FLAGS.progress,
                    executor=executor,
                ),
            ),
        )
    finally:
        executor.close()
    if isinstance(outcome, int):
        return outcome
    logging.info("computed %d cell(s)", outcome[0])
    rendered = render(cells, results, models, options)
    print("\n\n".join(item.text for item in rendered))

    def draw() -> list[Path]:
        paths = write_outputs(rendered, output)
        if FLAGS.figure:
            paths += write_figure(
                models, figure_model, dataset, figure_image, FLAGS.figure_attack, options, output
            )
        return paths

    written = cli.run_writing(PROGRAM, output, draw)
    if isinstance(written, int):
        return written
    logging.info("wrote %s", ", ".join(str(path) for path in written))
    return cli.EXIT_OK


def run() -> None:
    """Console entry point `reproduce_paper`."""
    cli.run_program(main, __name__, PROGRAM)
