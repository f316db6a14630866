"""`download_checkpoints NAME... | all`: download, verify and install official slim checkpoints.

Each tarball is checked (SHA-256 against the registry and checkpoints.lock.json,
safe extraction, variable names and shapes against the Keras model) before its
checkpoint files are moved into --checkpoint_dir; see checkpoints/README.md.
Exit status: 0 when every named checkpoint is installed and verified, 130 when
interrupted (the temporary folder is removed), 2 otherwise.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from defense.common import cli

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint_dir",
    None,
    "Where checkpoints are installed (default: $DEFENSE_CHECKPOINT_DIR, else ./checkpoints).",
)
flags.DEFINE_string(
    "base_url", None, "Tarball folder URL (default: the official download.tensorflow.org one)."
)
flags.DEFINE_float(
    "timeout", 20.0, "Seconds to wait for the connection and for each read.", lower_bound=0.1
)
flags.DEFINE_float(
    "deadline", 3600.0, "Seconds one tarball's download may take in all.", lower_bound=1
)
flags.DEFINE_boolean("force", False, "Download again even when a verified checkpoint is present.")
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")

PROGRAM = "download_checkpoints"


def main(argv: list[str]) -> int:
    """Fetch the named checkpoints; return the exit status."""
    cli.import_tensorflow()
    from defense import download
    from defense.models.registry import CHECKPOINT_BASE_URL, REGISTRY

    if len(argv) < 2:
        return cli.fail(PROGRAM, f"name the models to fetch, or `all`: {', '.join(REGISTRY)}")
    try:
        specs = download.select(argv[1:])
    except ValueError as error:
        return cli.fail(PROGRAM, f"{error} (or `all`)")
    checkpoint_dir = FLAGS.checkpoint_dir or cli.checkpoint_dir()
    failed, skipped = [], []
    for position, spec in enumerate(specs):
        try:
            download.ensure_checkpoint(
                spec,
                checkpoint_dir,
                base_url=FLAGS.base_url or CHECKPOINT_BASE_URL,
                timeout=FLAGS.timeout,
                deadline=FLAGS.deadline,
                force=FLAGS.force,
                progress=FLAGS.progress and sys.stderr.isatty(),
            )
        except KeyboardInterrupt:
            print(f"{PROGRAM}: interrupted; {spec.name} was not installed", file=sys.stderr)
            return cli.EXIT_INTERRUPTED
        except download.DownloadError as error:
            cli.fail(PROGRAM, f"{spec.name}: {error}")
            failed.append(spec.name)
            if isinstance(error, download.UnreachableError):
                skipped = [other.name for other in specs[position + 1 :]]
                break
    if failed:
        not_tried = f"; not tried, as the server is unreachable: {', '.join(skipped)}"
        return cli.fail(
            PROGRAM, f"not installed: {', '.join(failed)}{not_tried if skipped else ''}"
        )
    logging.info("checkpoints ready in %s: %s", checkpoint_dir, ", ".join(s.name for s in specs))
    return cli.EXIT_OK


def run() -> None:
    """Console entry point `download_checkpoints`."""
    cli.run_program(main, __name__, PROGRAM)
