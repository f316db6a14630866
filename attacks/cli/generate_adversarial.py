"""`generate_adversarial`: PNGs in, adversarial PNGs of the same names out (competition format).

Writes OUTPUT_DIR/<name> (uint8 PNG), OUTPUT_DIR/stats.csv (per image: label,
distances in pixel units and success on the float adversarial and on the rounded
PNG), OUTPUT_DIR/settings.json and, with --save_float, OUTPUT_DIR/float/<name>.npy.
Images already done are skipped, so an interrupted run can be resumed.

Exit status: 0 when every image was attacked (or already done), 1 when some
images could not be read (the others are done), 2 when nothing could run (bad
flags, labels, image sizes, input or output location, checkpoint) or an output
could not be written any more, 130 when interrupted; what was finished is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from absl import flags, logging

from attacks.catalog import ATTACKS, DEFENSE, HyperParameter
from attacks.evaluation.protocol import EOT_DEFAULT_CONFIG, SCENARIOS
from attacks.kinds import FIXED_BUDGET
from defense.common import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Directory of input PNGs.")
flags.DEFINE_string("output_dir", None, "Directory for the adversarial PNGs (created if needed).")
flags.DEFINE_string(
    "labels_file",
    None,
    "True labels: `<filename>,<label>` CSV or the NIPS 2017 dataset CSV (TrueLabel). "
    "Without it, untargeted attacks attack the model's own prediction.",
)
flags.DEFINE_string(
    "attack",
    None,
    "One of: "
    + "; ".join(f"{name} ({entry.kind}, on the {entry.target})" for name, entry in ATTACKS.items())
    + ".",
)
_ON_DEFENSE = ", ".join(name for name, entry in ATTACKS.items() if entry.target == DEFENSE)
flags.DEFINE_string(
    "scenario",
    "vanilla",
    f"Target model (not {_ON_DEFENSE}): one of {', '.join(SCENARIOS)}.",
)
flags.DEFINE_string("model", "ens_adv_inception_resnet_v2", "Registry model name.")
flags.DEFINE_string("checkpoint_path", None, cli.CHECKPOINT_PATH_HELP)
flags.DEFINE_string(
    "config",
    None,
    f"{_ON_DEFENSE} only: the defense attacked (challenge, paper, none or a .json path; "
    f"default {EOT_DEFAULT_CONFIG}).",
)
flags.DEFINE_integer(
    "num_iterations", None, f"{_ON_DEFENSE} only: patterns per image when judging success."
)
flags.DEFINE_integer(
    "chunk_size",
    None,
    f"{_ON_DEFENSE} only: patterns per forward pass (bounds memory); default all.",
)
flags.DEFINE_boolean("targeted", False, "Targeted attack (not deepfool).")
flags.DEFINE_string(
    "target_file",
    None,
    "Targets: `<filename>,<target>` CSV or a dataset CSV (TargetClass); "
    "default INPUT_DIR/target_class.csv.",
)
flags.DEFINE_float(
    "max_epsilon",
    None,
    "Clip outputs into this L-infinity ball (pixel units) around the inputs, as the "
    "competition does; also the default epsilon of the fixed-budget attacks ("
    + ", ".join(name for name, entry in ATTACKS.items() if entry.kind == FIXED_BUDGET)
    + ").",
)
flags.DEFINE_integer("batch_size", 16, "Images per batch.")
flags.DEFINE_boolean("save_float", False, "Also write the float adversarial as float/<name>.npy.")
flags.DEFINE_integer("seed", None, "Seed for random starts and patterns (default: random).")
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")


def _hyper_parameters() -> dict[str, list[tuple[str, HyperParameter]]]:
    """Every hyper-parameter name of the catalog, with the attacks taking it."""
    taken: dict[str, list[tuple[str, HyperParameter]]] = {}
    for attack, entry in ATTACKS.items():
        for param in entry.declaration.parameters:
            taken.setdefault(param.name, []).append((attack, param))
    return taken


def _flag_help(name: str, uses: Sequence[tuple[str, HyperParameter]]) -> str:
    """The help of a hyper-parameter's flag: the attacks' own texts, each after the
    attacks it is theirs where they differ (a step size of None is epsilon / 8 for PGD
    but epsilon / steps for DI-FGSM), then every attack's default."""
    texts: dict[str, list[str]] = {}
    for attack, param in uses:
        texts.setdefault(param.help, []).append(attack)
    if len(texts) == 1:
        text = next(iter(texts))
    else:
        text = " ".join(f"{', '.join(attacks)}: {help}" for help, attacks in texts.items())
    note = " Without it, --max_epsilon if given." if name == "epsilon" else ""
    defaults = ", ".join(f"{attack} {param.default}" for attack, param in uses)
    return f"{text}{note} Defaults: {defaults}."


_DEFINERS: dict[type, Callable[..., object]] = {
    float: flags.DEFINE_float,
    int: flags.DEFINE_integer,
    bool: flags.DEFINE_boolean,
}
_PARAM_FLAGS = _hyper_parameters()
for _name, _uses in _PARAM_FLAGS.items():
    _types = {param.type for _, param in _uses}
    if len(_types) != 1:
        raise TypeError(f"hyper-parameter {_name} has different types across attacks: {_types}")
    _DEFINERS[_types.pop()](_name, None, _flag_help(_name, _uses))

PROGRAM = "generate_adversarial"


def main(argv: list[str]) -> int:
    """Attack the input directory as the flags say; return the exit status."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not (FLAGS.input_dir and FLAGS.output_dir and FLAGS.attack):
        return cli.fail(PROGRAM, "--input_dir, --output_dir and --attack are required")
    cli.import_tensorflow()
    import keras

    from attacks.data.dataset import labels_for, read_labels, read_targets
    from attacks.evaluation.adversarial_set import RunRecord
    from attacks.evaluation.generate import (
        Attacker,
        check_image_sizes,
        check_run_options,
        generate_directory,
        pending_images,
        prepare_output_dir,
    )
    from attacks.evaluation.settings import labels_digest, make_settings
    from defense import models
    from defense.common.errors import InputError
    from defense.common.images import list_inputs
    from defense.loading import checkpoint_location, load_defended
    from defense.models.checkpoint import checkpoint_digest

    try:
        if FLAGS.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
        settings = make_settings(
            FLAGS.attack,
            {name: FLAGS[name].value for name in _PARAM_FLAGS if FLAGS[name].present},
            model=FLAGS.model,
            scenario=FLAGS.scenario,
            config=FLAGS.config,
            targeted=FLAGS.targeted,
            max_epsilon=FLAGS.max_epsilon,
        )
        check_run_options(
            settings, num_iterations=FLAGS.num_iterations, chunk_size=FLAGS.chunk_size
        )
        if FLAGS.target_file and not settings.targeted:
            raise ValueError("--target_file applies to --targeted attacks only")
        listing = list_inputs(FLAGS.input_dir)
        names = [path.name for path in listing.images]
        labels = targets = target_file = None
        if FLAGS.labels_file:
            labels = labels_for(names, read_labels(FLAGS.labels_file), source=FLAGS.labels_file)
        if settings.targeted:
            target_file = Path(FLAGS.target_file or Path(FLAGS.input_dir) / "target_class.csv")
            if not target_file.is_file():
                raise ValueError(
                    f"a targeted attack needs target classes: {target_file} does not exist "
                    "(give --target_file)"
                )
            targets = labels_for(names, read_targets(target_file), source=target_file)
        check_image_sizes(listing.images, settings.image_size)
    except (ValueError, InputError) as error:
        return cli.fail(PROGRAM, error)
    spec = models.get_spec(settings.model)
    checkpoint = checkpoint_location(spec, FLAGS.checkpoint_path or None)
    try:
        weights = checkpoint_digest(checkpoint)
    except models.CheckpointError:
        weights = None  # loading the model below says what is wrong with it
    settings = dataclasses.replace(
        settings, labels=labels_digest(labels), targets=labels_digest(targets), checkpoint=weights
    )
    try:
        output_dir = prepare_output_dir(FLAGS.output_dir, FLAGS.input_dir)
        record = RunRecord(output_dir, settings)
    except (ValueError, InputError) as error:
        return cli.fail(PROGRAM, f"{cli.in_flags(error)}{cli.output_hint()}")
    ignored = [path.name for path in listing.ignored if path != target_file]
    if ignored:
        logging.warning(
            "ignoring %d file(s) that are not images: %s", len(ignored), ", ".join(ignored)
        )
    if not pending_images(listing.images, record, save_float=FLAGS.save_float):
        logging.info("all %d images are already done in %s", len(names), output_dir)
        return cli.EXIT_OK

    try:
        model = load_defended(spec, checkpoint).model
    except models.CheckpointError as error:
        return cli.fail_checkpoint(PROGRAM, error, spec, default=not FLAGS.checkpoint_path)
    if FLAGS.seed is not None:
        keras.utils.set_random_seed(FLAGS.seed)
    attacker = Attacker(
        settings,
        model,
        seed=FLAGS.seed,
        num_iterations=FLAGS.num_iterations,
        chunk_size=FLAGS.chunk_size,
    )
    floats = "float/<name>.npy: float32 pixels in [0, 255] before rounding; "
    record.write_settings(
        {
            "labels": FLAGS.labels_file or "the attacked model's predictions on the clean images",
            "targets": str(target_file) if target_file else None,
            "success_judged_by": attacker.judged_by,
            "outputs": "<name>: PNG rounded to uint8; "
            f"{floats if FLAGS.save_float else ''}distances in pixel units",
        }
    )
    logging.info("%s on %s; success judged by %s", settings.attack, spec.name, attacker.judged_by)
    result = cli.run_writing(
        PROGRAM,
        output_dir,
        lambda: generate_directory(
            listing.images,
            record,
            attacker,
            labels=labels,
            targets=targets,
            batch_size=FLAGS.batch_size,
            save_float=FLAGS.save_float,
            progress=FLAGS.progress,
        ),
    )
    if isinstance(result, int):
        return result
    rows = [record.rows[name] for name in result.generated]
    logging.info(
        "attacked %d image(s), %d already done; success %d float, %d after rounding to PNG",
        len(rows),
        len(result.skipped),
        sum(row["success_float"] == "1" for row in rows),
        sum(row["success_png"] == "1" for row in rows),
    )
    return cli.report_failures(PROGRAM, result.failures, "attacked")


def run() -> None:
    """Console entry point `generate_adversarial`."""
    cli.run_program(main, __name__, PROGRAM)
