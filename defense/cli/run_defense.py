"""`run_defense`: classify a directory of PNGs with the randomization defense; write
`<filename>,<label>` lines.

Exit status: 0 when every image was classified, 1 when some images failed (the
others are still in the CSV), 2 when nothing could run (bad input or output
location, checkpoint, config or flags, or out of memory) or the CSV could not be
written any more (a full disk), 130 when interrupted (Ctrl-C, SIGTERM). The CSV holds every batch
finished before a stop.
"""

from __future__ import annotations

import contextlib

from absl import flags, logging

from defense.common import cli
from defense.config import MAX_ITERATIONS, load_config

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Directory of 299x299 PNG images.")
flags.DEFINE_string("output_file", None, "CSV to write: one `<filename>,<label>` line per image.")
flags.DEFINE_string("model", "ens_adv_inception_resnet_v2", "Registry model name.")
flags.DEFINE_string("checkpoint_path", None, cli.CHECKPOINT_PATH_HELP)
flags.DEFINE_string(
    "config", "challenge", "Defense config: challenge, paper, none, or a .json path."
)
flags.DEFINE_integer("batch_size", 16, "Images per batch.", lower_bound=1)
flags.DEFINE_integer(
    "num_iterations",
    None,
    f"Random patterns per image, at most {MAX_ITERATIONS}: each is a forward pass per image "
    "(default: the config's).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "chunk_size", 16, "Patterns per forward pass (bounds memory; on GPUs raise it).", lower_bound=1
)
flags.DEFINE_integer("seed", None, "Seed for reproducible patterns (default: OS entropy).")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "bfloat16", "float16"],
    "Compute precision (bfloat16 and float16: mixed precision, float32 weights; float16 "
    "is for GPUs).",
)
flags.DEFINE_boolean("jit_compile", False, "Compile each forward pass with XLA.")
flags.DEFINE_boolean(
    "early_exit",
    True,
    "Stop evaluating an image once its remaining patterns cannot change its label (the "
    "labels are those of the exhaustive run; --noearly_exit evaluates every pattern).",
)
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored"],
    "default: one device. mirrored: spread each batch's patterns over all visible GPUs "
    "(tf.distribute.MirroredStrategy); labels are those of the one-device run.",
)
flags.DEFINE_enum("aux_head", "entry", ["entry", "tf_models"], "Inception-ResNet-v2 aux head.")
flags.DEFINE_boolean("class_names", False, "Add a third column with the class name.")
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")

PROGRAM = "run_defense"
FLOAT16_ON_CPU = (
    "--precision=float16 on a CPU: TensorFlow emulates float16 there, which is slower than "
    "float32; --precision=bfloat16 is the CPU's mixed precision"
)


def main(argv: list[str]) -> int:
    """Run the defense as the flags say; return the exit status."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.input_dir or not FLAGS.output_file:
        return cli.fail(PROGRAM, "--input_dir and --output_file are required")

    try:  # no TensorFlow yet: a bad config or --num_iterations is refused at once
        config = load_config(FLAGS.config)
        if FLAGS.num_iterations is not None:
            config = config.replace(num_iterations=FLAGS.num_iterations)
    except ValueError as error:
        return cli.fail(PROGRAM, error)
    tf = cli.import_tensorflow()
    if FLAGS.precision == "float16" and not tf.config.list_physical_devices("GPU"):
        logging.warning(FLOAT16_ON_CPU)
    from defense.common.errors import InputError, ParameterError
    from defense.common.files import check_output_file
    from defense.common.images import list_inputs
    from defense.models import CheckpointError, get_spec

    try:
        spec = get_spec(FLAGS.model)
        listing = list_inputs(FLAGS.input_dir)
    except (ValueError, InputError) as error:
        return cli.fail(PROGRAM, str(error))
    try:
        check_output_file(FLAGS.output_file, inputs=listing.images)
    except InputError as error:
        return cli.fail(PROGRAM, f"{error}{cli.output_hint()}")

    from defense.classify import classify_directory
    from defense.distribute import NoGPUError, mirrored_strategy
    from defense.ensemble import RandomizedEnsemble
    from defense.labels import class_names
    from defense.loading import load_defended

    options = {"aux_head": FLAGS.aux_head} if FLAGS["aux_head"].present else {}
    try:
        spec.check_options(options)
    except ParameterError as error:
        return cli.fail(PROGRAM, error)
    try:
        strategy = mirrored_strategy() if FLAGS.strategy == "mirrored" else None
    except NoGPUError as error:
        return cli.fail(PROGRAM, f"--strategy=mirrored: {error}")
    try:
        with strategy.scope() if strategy else contextlib.nullcontext():
            # A static input size: a config whose canvas the model cannot take fails here,
            # before any weight is read.
            model = load_defended(
                spec,
                FLAGS.checkpoint_path or None,
                config=config,
                precision=FLAGS.precision,
                fixed_size=True,
                **options,
            ).model
    except ValueError as error:
        return cli.fail(PROGRAM, f"config {config.name}: {error}")
    except CheckpointError as error:
        return cli.fail_checkpoint(PROGRAM, error, spec, default=not FLAGS.checkpoint_path)
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return _out_of_memory(config.num_iterations)
    logging.info(
        "defense %s on %s: %d iterations, sizes [%d, %d) -> %d, flip probability %.2f, "
        "aux weight %.2f",
        config.name,
        spec.name,
        config.num_iterations,
        config.low,
        config.high,
        config.out_size,
        config.flip_probability,
        config.aux_weight,
    )
    ensemble = RandomizedEnsemble(
        model,
        config,
        seed=FLAGS.seed,
        chunk_size=FLAGS.chunk_size,
        jit_compile=FLAGS.jit_compile,
        strategy=strategy,
        early_exit=FLAGS.early_exit,
    )
    try:
        result = cli.run_writing(
            PROGRAM,
            FLAGS.output_file,
            lambda: classify_directory(
                FLAGS.input_dir,
                FLAGS.output_file,
                ensemble.predict,
                batch_size=FLAGS.batch_size,
                class_names=class_names() if FLAGS.class_names else None,
                progress=FLAGS.progress,
            ),
        )
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return _out_of_memory(config.num_iterations, kept_in=FLAGS.output_file)
    if isinstance(result, int):
        return result
    logging.info("classified %d images into %s", len(result.labels), FLAGS.output_file)
    if ensemble.patterns_drawn:
        saved = ensemble.patterns_drawn - ensemble.patterns_evaluated
        logging.info(
            "early exit %s: %d of %d pattern-forwards evaluated (%d saved, %.1f%%), "
            "%.1f patterns per image",
            "on" if FLAGS.early_exit else "off",
            ensemble.patterns_evaluated,
            ensemble.patterns_drawn,
            saved,
            100.0 * saved / ensemble.patterns_drawn,
            ensemble.patterns_evaluated / len(result.labels),
        )
    return cli.report_failures(PROGRAM, result.failures, "classified")


def _out_of_memory(num_iterations: int, kept_in: str | None = None) -> int:
    """The one message for TensorFlow or NumPy running out of memory: the flags that size
    the work (a batch's patterns are held at once, a chunk's go through the network)."""
    kept = f"; what was finished is kept in {kept_in}" if kept_in else ""
    return cli.fail(
        PROGRAM,
        f"out of memory with --batch_size={FLAGS.batch_size} x --num_iterations={num_iterations}"
        f" patterns per batch (--chunk_size={FLAGS.chunk_size} per forward pass): lower them"
        f"{kept}",
    )


def run() -> None:
    """Console entry point `run_defense`."""
    cli.run_program(main, __name__, PROGRAM)
