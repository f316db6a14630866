"""`make_dataset`: the competition's 299x299 PNG dataset from its CSV and the original images.

Each row of the dataset CSV (`ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,...`)
is cropped to its relative box, resized to 299x299 (Lanczos) and saved as
`<ImageId>.png`; the original comes from --images_dir (`<ImageId>.jpg` or `.png`)
or, with --download, from its URL. Crops that exist are skipped; an image that
cannot be had is reported and the others go on.

--select_correct=MODEL,... keeps only images every named registry model
classifies correctly (the paper's protocol), --sample=N --seed=S draws N of them
(the paper's 5000, or the 500 of Sections 4.5-4.6). Then the crops go to
OUTPUT_DIR/all (or --crops_dir) and OUTPUT_DIR holds the final set only. Always
writes OUTPUT_DIR/dataset.csv, the final rows in the input's format (the labels
file of the other commands).

Exit status: 0 when every image is done, 1 when some images could not be made
(the others are), 2 when nothing could run (bad flags, a bad CSV, a missing
checkpoint, a sample larger than the images available, an --output_dir whose
dataset.csv is the --dataset_csv, an --images_dir that is the output or crops
folder) or an output could not be written, 130 when interrupted; finished crops
are kept.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags, logging

from attacks.data.builder import (
    DATASET_FILE,
    DEFAULT_TIMEOUT,
    Classify,
    DatasetReport,
    check_locations,
    make_dataset,
    read_dataset_csv,
)
from defense.common import cli
from defense.common.errors import InputError, ParameterError

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "dataset_csv", None, "The competition's dataset CSV (dev_dataset.csv, final_dataset.csv)."
)
flags.DEFINE_string("output_dir", None, "Where the PNGs and dataset.csv go (created if needed).")
flags.DEFINE_string("images_dir", None, "Folder of the original images, <ImageId>.jpg or .png.")
flags.DEFINE_boolean("download", False, "Download originals missing from --images_dir.")
flags.DEFINE_float(
    "timeout",
    DEFAULT_TIMEOUT,
    "Seconds one image's download may take in all, redirects included.",
    lower_bound=0.1,
)
flags.DEFINE_string(
    "crops_dir",
    None,
    "Where every crop goes; default OUTPUT_DIR, or OUTPUT_DIR/all with --select_correct or "
    "--sample (share one between runs to crop once).",
)
flags.DEFINE_list(
    "select_correct", [], "Registry models that must all classify an image correctly to keep it."
)
flags.DEFINE_string("checkpoint_dir", None, "Folder of the slim checkpoints for --select_correct.")
flags.DEFINE_integer("sample", None, "Keep N images drawn at random (after --select_correct).")
flags.DEFINE_integer("seed", 0, "Seed of --sample.")
flags.DEFINE_integer("batch_size", 16, "Images per batch when classifying.", lower_bound=1)
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")

PROGRAM = "make_dataset"
FLAG_NAMES = {"select": "select_correct", "sample_size": "sample"}


def _classifier(names: list[str], checkpoint_dir: str | None) -> Classify:
    """A classify function for the registry models `names` (checkpoints in `checkpoint_dir`,
    None: the default one), each loaded once when first used; a missing checkpoint fails
    here, before any image is cropped."""
    cli.import_tensorflow()
    from defense import models
    from defense.common.images import to_model_input
    from defense.loading import checkpoint_location, load_defended
    from defense.models.checkpoint import checkpoint_digest

    paths = {}
    for name in names:
        paths[name] = checkpoint_location(models.get_spec(name), checkpoint_dir=checkpoint_dir)
        try:
            checkpoint_digest(paths[name])
        except models.CheckpointError as error:
            raise InputError(
                f"--select_correct={name}: {error}. Get it with `download_checkpoints {name}`, "
                "or give --checkpoint_dir"
            ) from error
    loaded: dict[str, Any] = {}

    def classify(name: str, pixels: np.ndarray) -> np.ndarray:
        if name not in loaded:
            loaded.clear()  # one model in memory at a time
            logging.info("classifying with %s", name)
            loaded[name] = load_defended(name, paths[name]).model
        outputs = loaded[name](to_model_input(pixels), training=False)
        return np.argmax(outputs["logits"].numpy(), axis=1)

    return classify


def main(argv: list[str]) -> int:
    """Build the dataset as the flags say; return the exit status."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not (FLAGS.dataset_csv and FLAGS.output_dir):
        return cli.fail(PROGRAM, "--dataset_csv and --output_dir are required")
    if not (FLAGS.images_dir or FLAGS.download):
        return cli.fail(PROGRAM, "give --images_dir (the original images) and/or --download")
    if FLAGS.images_dir and not Path(FLAGS.images_dir).is_dir():
        return cli.fail(PROGRAM, f"--images_dir {FLAGS.images_dir} is not a directory")
    classify = None
    try:
        dataset = read_dataset_csv(FLAGS.dataset_csv)
        if FLAGS.sample is not None and not 1 <= FLAGS.sample <= len(dataset.rows):
            raise ParameterError(
                f"sample_size={FLAGS.sample} is not in 1..{len(dataset.rows)}, the rows of the CSV",
                "sample_size",
            )
        check_locations(
            dataset,
            FLAGS.output_dir,
            crops_dir=FLAGS.crops_dir,
            images_dir=FLAGS.images_dir or None,
            narrowed=bool(FLAGS.select_correct) or FLAGS.sample is not None,
        )
        if FLAGS.select_correct:
            classify = _classifier(FLAGS.select_correct, FLAGS.checkpoint_dir or None)
    except (ValueError, InputError) as error:
        return cli.fail(PROGRAM, error, flag_names=FLAG_NAMES)

    def work() -> DatasetReport | int:
        try:
            return make_dataset(
                dataset,
                FLAGS.output_dir,
                crops_dir=FLAGS.crops_dir,
                images_dir=FLAGS.images_dir,
                allow_download=FLAGS.download,
                timeout=FLAGS.timeout,
                select=FLAGS.select_correct,
                classify=classify,
                sample_size=FLAGS.sample,
                seed=FLAGS.seed,
                batch_size=FLAGS.batch_size,
                progress=FLAGS.progress,
            )
        except ParameterError as error:  # a sample larger than the images kept
            return cli.fail(PROGRAM, f"{cli.in_flags(error, FLAG_NAMES)}; the crops are kept")

    report = cli.run_writing(PROGRAM, FLAGS.output_dir, work)
    if isinstance(report, int):
        return report
    build = report.build
    logging.info(
        "%d crop(s) made, %d existed, %d failed",
        len(build.written),
        len(build.skipped),
        len(build.failures),
    )
    for model, accuracy in report.accuracies.items():
        logging.info("%s classifies %.1f%% of the images correctly", model, 100 * accuracy)
    logging.info(
        "%d image(s) in %s (listed in %s)", len(report.final), FLAGS.output_dir, DATASET_FILE
    )
    if report.strays:
        logging.warning(
            "%d PNG(s) in %s are not in the final set (from an earlier run?): %s",
            len(report.strays),
            FLAGS.output_dir,
            ", ".join(report.strays[:10]),
        )
    if build.network_failures and not build.downloaded:
        print(
            f"{PROGRAM}: no download got through ({build.network_failures} failed): offline? "
            "Put the original images in --images_dir as <ImageId>.jpg or .png.",
            file=sys.stderr,
        )
    if build.missing:
        print(
            f"{PROGRAM}: {build.missing} original(s) are not in --images_dir: give --download to "
            "fetch them from their URLs",
            file=sys.stderr,
        )
    return cli.report_failures(PROGRAM, build.failures, "made")


def run() -> None:
    """Console entry point `make_dataset`."""
    cli.run_program(main, __name__, PROGRAM)
