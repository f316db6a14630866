"""`evaluate_adversarial`: judge an adversarial set, target- vs defense-model accuracy.

Reads a directory written by generate_adversarial.py, either its uint8 PNGs
(--source=png, what the competition sees) or its lossless float copies
(--source=float, written with --save_float; the paper's near-0% target
accuracies imply these). The model and scenario default to the ones the set was
made with (its settings.json). Prints one result line naming the source, and
with --output_file also writes the result as JSON, atomically.

Exit status: 0 on success, 2 when nothing could be evaluated (bad flags, missing
or unreadable files, labels, checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags, logging

from attacks.evaluation.protocol import SCENARIOS, SOURCES
from defense.common import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("adversarial_dir", None, "Output directory of generate_adversarial.py.")
flags.DEFINE_enum("source", "png", list(SOURCES), "Judge the rounded PNGs or the float copies.")
flags.DEFINE_string(
    "labels_file",
    None,
    "True labels (`<filename>,<label>` CSV or NIPS 2017 dataset CSV); default: the set's "
    "stats.csv labels.",
)
flags.DEFINE_string("model", None, "Registry model; default: the one the set was made on.")
flags.DEFINE_string("checkpoint_path", None, cli.CHECKPOINT_PATH_HELP)
flags.DEFINE_string(
    "scenario", None, f"Target model, one of {', '.join(SCENARIOS)}; default: the set's."
)
flags.DEFINE_string("config", "paper", "Randomized defense: challenge, paper, none or a .json.")
flags.DEFINE_integer("runs", 3, "Defense runs with fresh patterns, averaged.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Images per batch.", lower_bound=1)
flags.DEFINE_integer("seed", None, "Seed for the defense's patterns (default: OS entropy).")
flags.DEFINE_string("output_file", None, "Also write the result as JSON here.")
flags.DEFINE_boolean(
    "early_exit",
    True,
    "Stop evaluating an image once its remaining patterns cannot change its label (the "
    "same labels; --noearly_exit evaluates every pattern).",
)

PROGRAM = "evaluate_adversarial"


def main(argv: list[str]) -> int:
    """Evaluate the set as the flags say; return the exit status."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.adversarial_dir:
        return cli.fail(PROGRAM, "--adversarial_dir is required")
    cli.import_tensorflow()
    from attacks.data.dataset import read_labels
    from attacks.evaluation.accuracy import evaluate_batches
    from attacks.evaluation.adversarial_set import read_adversarial_set, read_settings
    from attacks.evaluation.scenarios import build_scenario
    from defense import models
    from defense.common.errors import InputError
    from defense.common.files import check_output_file, write_text_atomic
    from defense.config import load_config
    from defense.loading import load_defended

    directory = Path(FLAGS.adversarial_dir)
    try:
        recorded = read_settings(directory)
        spec = models.get_spec(FLAGS.model or recorded.get("model", "ens_adv_inception_resnet_v2"))
        scenario_name = FLAGS.scenario or recorded.get("scenario", "vanilla")
        if scenario_name not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {scenario_name!r}; known scenarios: {', '.join(SCENARIOS)}"
            )
        scenario = build_scenario(scenario_name, input_size=spec.default_image_size)
        config = load_config(FLAGS.config)
        labels = read_labels(FLAGS.labels_file) if FLAGS.labels_file else None
        adversarial = read_adversarial_set(directory, FLAGS.source, labels=labels)
        if FLAGS.output_file:
            check_output_file(FLAGS.output_file)
        model = load_defended(spec, FLAGS.checkpoint_path or None, config=config).model
        accuracies = evaluate_batches(
            model,
            scenario,
            adversarial.batches(FLAGS.batch_size, scenario.input_size),
            config=config,
            runs=FLAGS.runs,
            seed=FLAGS.seed,
            early_exit=FLAGS.early_exit,
        )
    except (ValueError, InputError, models.CheckpointError) as error:
        return cli.fail(PROGRAM, error)
    defense = (
        f"{config.name} config, {FLAGS.runs} run(s)"
        if scenario.randomized_defense
        else f"the {scenario.name} scenario's fixed defense"
    )
    result = {
        "adversarial_dir": str(directory),
        "source": FLAGS.source,
        "source_meaning": SOURCES[FLAGS.source],
        "images": len(adversarial.names),
        "labels": FLAGS.labels_file or f"{directory / 'stats.csv'} (label column)",
        "model": spec.name,
        "scenario": scenario.name,
        "defense": defense,
        "target_accuracy": accuracies.target,
        "defense_accuracy": accuracies.defense,
    }
    print(
        f"{FLAGS.source} ({SOURCES[FLAGS.source]}), {len(adversarial.names)} images, "
        f"{spec.name}: target model ({scenario.name}) {accuracies.target:.1%}, "
        f"defense ({defense}) {accuracies.defense:.1%}"
    )
    if FLAGS.output_file:
        text = json.dumps(result, indent=2) + "\n"
        written = cli.run_writing(
            PROGRAM, FLAGS.output_file, lambda: write_text_atomic(FLAGS.output_file, text)
        )
        if written is not None:
            return written
        logging.info("wrote %s", FLAGS.output_file)
    return cli.EXIT_OK


def run() -> None:
    """Console entry point `evaluate_adversarial`."""
    cli.run_program(main, __name__, PROGRAM)
