"""One piece as a unit of work: what a worker does to run an attack on a batch or a
defense on a part of a pool, wherever it runs (this process, or a Ray worker on
any node that sees the intermediate directory).

The worker gets the piece's input files by digest, places them in the piece's own
`input/` folder (from the store; a piece never shares its input folder, so pieces
running side by side cannot reach each other's), runs the entry point within the
time limit with its processes contained (`runner`, `containment`: this worker is
their subreaper and its ledger entry names the piece while it runs), checks what
the piece changed of its input and of the dataset, removes the input folder, and
reads the outputs (an attack's images clipped into the store, a defense's labels).
It returns all that to the driver, which alone seals records, pools and scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from attacks.competition import containment, runner
from attacks.competition.adversarial import AttackOutput, clip_outputs
from attacks.competition.batches import Batch
from attacks.competition.layout import fresh_dir, remove
from attacks.competition.pieces import CLIPPED_DIR, RESULT_FILE, DefenseOutput, read_defense_output
from attacks.competition.store import Store, changed_files, digest_of, place_files
from attacks.competition.submissions import Submission
from defense.common.files import read_bounded, reason

INPUT_DIR, OUTPUT_DIR = "input", "output"


@dataclass(frozen=True)
class PieceTask:
    """Everything a worker needs to run one piece; every path absolute.

    files: the piece's input, name -> digest (read from `store`, or from the first
    matching file of `sources[name]`). batch: an attack's batch (its epsilon, and the
    clean images its output is clipped against); None for a defense, whose expected
    image names (without suffix) are `names`. dataset: (file name, path, digest) of
    every clean image, checked after the piece."""

    label: str
    submission: Submission
    runtime: runner.Runtime
    folder: Path
    files: dict[str, str]
    sources: dict[str, tuple[Path, ...]]
    store: Store
    ledger_dir: Path
    time_limit: float | None
    grace_period: float
    dataset: tuple[tuple[str, Path, str], ...]
    batch: Batch | None = None
    names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PieceRun:
    """What a worker returns: how the entry point ended, what it produced, the input
    files it changed and the dataset files found changed after it."""

    outcome: runner.Outcome
    output: AttackOutput | DefenseOutput
    changed_input: tuple[str, ...]
    changed_dataset: tuple[str, ...]


def run_piece(task: PieceTask) -> PieceRun:
    """Run the piece `task` describes (a unit of work: runs in any worker)."""
    from attacks.execution.executor import assigned_gpus

    containment.become_subreaper()
    folder = fresh_dir(task.folder)
    input_dir = place_files(folder / INPUT_DIR, task.files, task.store, task.sources)
    written = fresh_dir(folder / OUTPUT_DIR, open_to_all=task.runtime.kind == runner.DOCKER)
    runtime = dataclasses.replace(task.runtime, devices=assigned_gpus())
    if task.batch is not None:
        invocation = runtime.attack(task.submission, input_dir, written, task.batch.epsilon)
    else:
        invocation = runtime.defense(task.submission, input_dir, written / RESULT_FILE)
    outcome = runner.run(
        invocation,
        time_limit=task.time_limit,
        grace_period=task.grace_period,
        log_dir=folder,
        ledger_dir=task.ledger_dir,
    )
    changed_input = tuple(changed_files(input_dir, task.files))
    remove(input_dir)
    changed_dataset = tuple(
        name for name, path, digest in task.dataset if digest_of(path) != digest
    )
    output: AttackOutput | DefenseOutput
    if task.batch is not None:
        output = clip_outputs(written, task.batch, fresh_dir(folder / CLIPPED_DIR), task.store)
    else:
        output = read_defense_output(written / RESULT_FILE, task.names)
    return PieceRun(outcome, output, changed_input, changed_dataset)


def unshared(
    dataset: tuple[tuple[str, Path, str], ...],
    entry_points: tuple[tuple[str, Path], ...],
    probe: Path,
    token: str,
) -> list[str]:
    """What this node does not share with the driver (run on every node before any
    piece): dataset images (file name, path, digest) missing or with other content,
    submissions' entry points (name, path) missing, and an intermediate directory
    whose `probe` file does not hold the driver's `token`."""
    found = [
        f"{name} (missing or other content)"
        for name, path, digest in dataset
        if digest_of(path) != digest
    ]
    found += [
        f"submission {name} ({path} missing)" for name, path in entry_points if not path.is_file()
    ]
    try:
        seen = read_bounded(probe, max_bytes=256).decode("ascii", "replace").strip()
    except OSError as error:
        seen = f"unreadable: {reason(error)}"
    if seen != token:
        found.append(f"intermediate_results_dir {probe.parent} (not the driver's folder)")
    return found
