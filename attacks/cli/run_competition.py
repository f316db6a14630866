"""`run_competition`: the NIPS 2017 dev toolkit's harness, with the cloud evaluation's rules.

Runs every attack of --attacks_dir and --targeted_attacks_dir (subfolders with a
metadata.json) on the dataset, clips their images into the epsilon ball, and runs
every defense of --defenses_dir on all of them, mixed under anonymous names; then
writes the toolkit's matrices and rankings, scores.json (with the eq. (5)
normalised defense scores) and summary.md into --output_dir. The dataset is cut
into batches of --batch_size images, each attacked with one epsilon (--epsilon:
one value, as the toolkit does, or `cycle`: 4, 8, 12, 16 over the batches, as the
cloud evaluation does); every (submission, batch) piece runs within --time_limit.
A piece that crashes, hangs or writes nothing is recorded and the run goes on.
Finished pieces are kept in --intermediate_results_dir: running the same command
again continues an interrupted run and reruns nothing that finished.

Submissions are treated as hostile: each piece's inputs are rebuilt from the
harness's own copies before it runs and checked after, the dataset folder is
checked after every piece, records are sealed, and every process a piece starts
ends with it. The native runtime runs submissions with your privileges, so it
detects and repairs what they change but cannot stop them; run untrusted
submissions with --runtime=docker (read-only inputs, no network, --docker_memory
and --docker_cpus limits).

With --executor=ray the pieces of each phase (the attacks, then the defenses) run
side by side as Ray tasks (--cpus_per_task, --gpus_per_task: with --runtime=docker
and --gpu a piece's container gets `--gpus "device=..."` of its task's GPUs), on a
local instance or the cluster at --ray_address, whose nodes must all see the
dataset, the submissions and --intermediate_results_dir at the same paths. The
outputs are the same as with --executor=local (timings aside); only this process
writes records and results.

Exit status: 0 when every piece ran cleanly, 1 when the results are complete but
something went wrong (a submission skipped or failing, images or rows missing; see
summary.md), 2 when nothing could run (bad flags, dataset, metadata, no usable
submission) or an output could not be written, 130 when interrupted.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from attacks.execution import flags as execution_flags
from defense.common import cli
from defense.common.errors import ParameterError

FLAGS = flags.FLAGS
flags.DEFINE_string("attacks_dir", None, "Directory of non-targeted attack submissions.")
flags.DEFINE_string("targeted_attacks_dir", None, "Directory of targeted attack submissions.")
flags.DEFINE_string("defenses_dir", None, "Directory of defense submissions.")
flags.DEFINE_string("dataset_dir", None, "Directory of the clean images, <ImageId>.png.")
flags.DEFINE_string(
    "dataset_metadata",
    None,
    "The NIPS 2017 dataset CSV (ImageId, TrueLabel and TargetClass columns; labels 1..1000).",
)
flags.DEFINE_string(
    "intermediate_results_dir",
    None,
    "Directory for the pieces' inputs, outputs and records (created; reused to resume).",
)
flags.DEFINE_string("output_dir", None, "Directory for the result files (created if needed).")
flags.DEFINE_string(
    "epsilon",
    "16",
    "Maximum perturbation in pixel units: an integer 0..255 for every batch (the dev "
    "toolkit), or `cycle`: batch k gets 4, 8, 12, 16 [k % 4] (the cloud evaluation).",
)
flags.DEFINE_boolean(
    "gpu", False, "Docker runtime: use the submissions' container_gpu and `--gpus all`."
)
flags.DEFINE_boolean(
    "save_all_classification", False, "Also write every classification, all_classification.csv."
)
flags.DEFINE_enum(
    "runtime",
    "native",
    ["native", "docker"],
    "native: run each entry point directly, its container paths given as the host folders; "
    "docker: the toolkit's `docker run` command lines.",
)
flags.DEFINE_integer(
    "batch_size", 100, "Images per batch (the cloud evaluation's 100).", lower_bound=1
)
flags.DEFINE_float(
    "time_limit",
    500,
    "Seconds per (submission, batch) piece, then SIGTERM and SIGKILL; what it wrote "
    "counts (the cloud evaluation's 500). 0: no limit, as in the dev toolkit.",
    lower_bound=0,
)
flags.DEFINE_float(
    "grace_period", 10, "Seconds between SIGTERM and SIGKILL at the time limit.", lower_bound=0
)
flags.DEFINE_boolean(
    "retry_failed", False, "Rerun finished pieces that failed or timed out, not only new ones."
)
flags.DEFINE_string(
    "docker_memory",
    None,
    "Docker runtime: each container's memory limit, as `docker run -m` takes it (e.g. 16g).",
)
flags.DEFINE_float(
    "docker_cpus", None, "Docker runtime: the CPUs each container may use (`docker run --cpus`)."
)
flags.DEFINE_boolean(
    "progress", True, "Show a progress bar over the pieces on stderr (when it is a terminal)."
)

PROGRAM = "run_competition"
_REQUIRED = ("defenses_dir", "dataset_dir", "dataset_metadata", "intermediate_results_dir")


def main(argv: list[str]) -> int:
    """Run the competition as the flags say; return the exit status."""
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    missing = [f"--{name}" for name in (*_REQUIRED, "output_dir") if not FLAGS[name].value]
    if missing:
        return cli.fail(PROGRAM, f"{', '.join(missing)} required")
    try:
        execution_flags.check_executor_flags()
    except ParameterError as error:
        return cli.fail(PROGRAM, error)
    from tqdm import tqdm

    from attacks.competition.harness import Options, prepare
    from defense.common.errors import InputError

    options = Options(
        defenses_dir=FLAGS.defenses_dir,
        dataset_dir=FLAGS.dataset_dir,
        dataset_metadata=FLAGS.dataset_metadata,
        intermediate_results_dir=FLAGS.intermediate_results_dir,
        output_dir=FLAGS.output_dir,
        attacks_dir=FLAGS.attacks_dir,
        targeted_attacks_dir=FLAGS.targeted_attacks_dir,
        epsilon=FLAGS.epsilon,
        batch_size=FLAGS.batch_size,
        time_limit=FLAGS.time_limit,
        grace_period=FLAGS.grace_period,
        runtime=FLAGS.runtime,
        gpu=FLAGS.gpu,
        save_all_classification=FLAGS.save_all_classification,
        retry_failed=FLAGS.retry_failed,
        docker_memory=FLAGS.docker_memory,
        docker_cpus=FLAGS.docker_cpus,
    )
    try:
        competition = prepare(options)
        executor = execution_flags.executor_from_flags()
    except (ValueError, InputError) as error:
        return cli.fail(PROGRAM, error)
    try:
        competition.check_shared(executor)
    except (OSError, InputError) as error:
        executor.close()
        return cli.fail(PROGRAM, error)
    shown = FLAGS.progress and sys.stderr.isatty()
    bar = tqdm(unit="piece", disable=not shown, dynamic_ncols=True)

    def progress(done: int, total: int, label: str | None) -> None:
        """The bar over the pieces to run, with ETA, driven by completions."""
        if label is None:
            bar.total = total
            bar.refresh()
        else:
            bar.set_postfix_str(label)
            bar.update()

    try:
        scores = cli.run_writing(
            PROGRAM,
            FLAGS.intermediate_results_dir,
            lambda: competition.run(executor, progress),
        )
    finally:
        bar.close()
        executor.close()
    if isinstance(scores, int):
        return scores
    logging.info("results in %s", FLAGS.output_dir)
    problems = scores.problems()
    if problems:
        print(
            f"{PROGRAM}: {len(problems)} problem(s), listed in {FLAGS.output_dir}/summary.md",
            file=sys.stderr,
        )
        return cli.EXIT_PARTIAL
    return cli.EXIT_OK


def run() -> None:
    """Console entry point `run_competition`."""
    cli.run_program(main, __name__, PROGRAM)
