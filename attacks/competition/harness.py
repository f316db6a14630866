"""A competition run: check everything that can be checked first (`prepare`), then run
every piece, pool the attacks' images, score and write the results (`Competition.run`).

Order as in the dev toolkit: the non-targeted attacks, the targeted ones, then the
defenses; each on every batch (defenses: on every part of the batch's pool). A piece
that crashes, hangs or writes nothing is recorded with its reason and the run goes
on; a finished piece is reused by a later run on the same intermediate directory.

The pieces of a phase run on an executor (`attacks.execution`): one after another
in this process, or side by side as Ray tasks on the nodes of a cluster that share
the intermediate directory (`work`: what a worker does). Only this process seals
records, pools and scores, in the pieces' order, so the outputs are the same on
every executor.

Submissions are treated as hostile. Each piece gets its own input folder, built
from the harness's store and checked after it ran (a change is reported and never
reaches another piece); the dataset folder is checked after every piece (a change
is reported, exit 1, and the run goes on with the copies read at the start);
records are sealed; every process a piece started ends with it; and the
intermediate and output folders may not overlap the dataset or a submission, so
that nothing the harness removes is an input. See `runner`, `containment`, `store`
and `pieces`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from absl import logging

from attacks.competition import containment, runner
from attacks.competition.adversarial import (
    AdversarialImage,
    AttackOutput,
    part_digest,
    pool,
)
from attacks.competition.batches import (
    BATCH_SIZE,
    CYCLE,
    TARGET_CLASS_FILE,
    Batch,
    Dataset,
    parse_epsilon,
    read_dataset,
)
from attacks.competition.layout import Layout, remove
from attacks.competition.pieces import (
    RESULT_FILE,
    AttackPiece,
    DefenseOutput,
    DefensePiece,
    load_record,
    save_record,
)
from attacks.competition.scoring import (
    ALL_CLASSIFICATION,
    OUTPUT_FILES,
    Classification,
    Results,
    Scores,
    score,
)
from attacks.competition.store import place_files
from attacks.competition.submissions import (
    ATTACK,
    DEFENSE,
    TARGETED_ATTACK,
    Submission,
    discover,
)
from attacks.competition.work import PieceRun, PieceTask, run_piece, unshared
from attacks.execution.executor import Executor, LocalExecutor, Unit, refuse_unshared
from defense.common.errors import ParameterError, listing
from defense.common.files import check_output_file, ensure_writable_dir, write_text_atomic

TIME_LIMIT = 500.0
GRACE_PERIOD = 10.0
# A day: the longest time limit or grace period that means anything for one piece.
MAX_SECONDS = 86_400.0
MAPPING_FILE = "mapping.json"
# Written by the driver, read by every node: the intermediate directory is shared.
SHARED_PROBE = ".shared"


@dataclass(frozen=True)
class Options:
    """What to run and how; the defaults are the dev toolkit's epsilon (16 for every
    batch) with the cloud evaluation's batches and time limit."""

    defenses_dir: str | os.PathLike
    dataset_dir: str | os.PathLike
    dataset_metadata: str | os.PathLike
    intermediate_results_dir: str | os.PathLike
    output_dir: str | os.PathLike
    attacks_dir: str | os.PathLike | None = None
    targeted_attacks_dir: str | os.PathLike | None = None
    epsilon: str = "16"
    batch_size: int = BATCH_SIZE
    time_limit: float = TIME_LIMIT
    grace_period: float = GRACE_PERIOD
    runtime: str = runner.NATIVE
    gpu: bool = False
    save_all_classification: bool = False
    retry_failed: bool = False
    docker_memory: str | None = None
    docker_cpus: float | None = None


def _check_seconds(value: float, parameter: str, meaning: str) -> None:
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise ParameterError(
            f"{parameter} must be a number of seconds in 0..{MAX_SECONDS:g}{meaning}, "
            f"got {value:g}",
            parameter,
        )


def _check_options(options: Options) -> None:
    _check_seconds(options.time_limit, "time_limit", " (0: no limit)")
    _check_seconds(options.grace_period, "grace_period", "")
    if options.docker_cpus is not None and not (
        math.isfinite(options.docker_cpus) and 0 < options.docker_cpus <= 1024
    ):
        raise ParameterError(
            f"docker_cpus must be a number of CPUs in (0, 1024], got {options.docker_cpus:g}",
            "docker_cpus",
        )
    if options.docker_memory is not None and not _is_memory(options.docker_memory):
        raise ParameterError(
            "docker_memory must be a size as docker run -m takes it (a number with an "
            f"optional unit b, k, m or g, e.g. 16g), got {options.docker_memory!r}",
            "docker_memory",
        )
    if options.runtime not in runner.RUNTIMES:
        raise ParameterError(
            f"runtime must be one of {', '.join(runner.RUNTIMES)}, got {options.runtime!r}",
            "runtime",
        )
    if options.runtime == runner.DOCKER and shutil.which("docker") is None:
        raise ParameterError(
            "runtime docker needs the docker command, which is not on PATH", "runtime"
        )
    if not (options.attacks_dir or options.targeted_attacks_dir):
        raise ParameterError(
            "give attacks_dir, targeted_attacks_dir or both", "attacks_dir", "targeted_attacks_dir"
        )


def _is_memory(value: str) -> bool:
    number = value[:-1] if value[-1:].lower() in ("b", "k", "m", "g") else value
    return number.isdigit() and int(number) > 0


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _check_locations(options: Options, submissions: list[Submission]) -> None:
    """Refuse an output folder (intermediate or output) that is, holds or lies in an input
    (the dataset folder or CSV, a submissions folder or a submission): the harness
    removes and rewrites what is in its folders."""
    inputs = {
        "dataset_dir": options.dataset_dir,
        "dataset_metadata": options.dataset_metadata,
        "attacks_dir": options.attacks_dir,
        "targeted_attacks_dir": options.targeted_attacks_dir,
        "defenses_dir": options.defenses_dir,
        **{f"the submission {s.name}": s.directory for s in submissions},
    }
    for output in ("intermediate_results_dir", "output_dir"):
        place = _real(getattr(options, output))
        for name, given in inputs.items():
            if given is None:
                continue
            source = _real(given)
            if place == source or source in place.parents or place in source.parents:
                parameters = [output, *([name] if " " not in name else [])]
                raise ParameterError(
                    f"{output} {getattr(options, output)} overlaps {name} {given}: the "
                    "harness writes and removes files in its folders; give a folder apart "
                    "from the dataset and the submissions",
                    *parameters,
                )


def _skipped_note(skipped: dict[str, str]) -> str:
    return "".join(f"; skipped {folder}: {reason}" for folder, reason in skipped.items())


def prepare(options: Options) -> Competition:
    """Check the options, read the dataset and discover the submissions; raise a
    `ParameterError` or `InputError` when nothing can run. Creates the output folders."""
    _check_options(options)
    epsilons = parse_epsilon(options.epsilon)
    dataset = read_dataset(options.dataset_dir, options.dataset_metadata)
    # Absolute paths: pieces may run in workers started elsewhere (another directory).
    dataset = Dataset(
        tuple(dataclasses.replace(i, path=i.path.absolute()) for i in dataset.images),
        dataset.ids_without_files,
    )
    batches = dataset.batches(options.batch_size, epsilons)
    docker = options.runtime == runner.DOCKER
    skipped: dict[str, str] = {}
    found: dict[str, list[Submission]] = {}
    for kind, parameter in (
        (ATTACK, "attacks_dir"),
        (TARGETED_ATTACK, "targeted_attacks_dir"),
        (DEFENSE, "defenses_dir"),
    ):
        directory = getattr(options, parameter)
        found[kind] = []
        if directory:
            submissions, skipped_here = discover(
                directory, kind, parameter=parameter, docker=docker
            )
            found[kind] = [
                dataclasses.replace(s, directory=s.directory.absolute()) for s in submissions
            ]
            skipped |= skipped_here
    if not found[DEFENSE]:
        raise ParameterError(
            f"defenses_dir {options.defenses_dir} holds no usable defense (a subfolder with a "
            f"metadata.json of type defense){_skipped_note(skipped)}",
            "defenses_dir",
        )
    if not (found[ATTACK] or found[TARGETED_ATTACK]):
        raise ParameterError(
            "attacks_dir and targeted_attacks_dir hold no usable attack (a subfolder with a "
            f"metadata.json of type attack or targeted_attack){_skipped_note(skipped)}",
            "attacks_dir",
            "targeted_attacks_dir",
        )
    _check_locations(options, [s for kind in found.values() for s in kind])
    for folder, reason in skipped.items():
        logging.warning("skipping the submission in %s: %s", folder, reason)
    if dataset.ids_without_files:
        without = list(dataset.ids_without_files)
        logging.warning(
            "%d id(s) of the dataset metadata have no PNG in %s and are left out: %s",
            len(without),
            options.dataset_dir,
            listing(without),
        )
    if options.gpu and not docker:
        logging.warning("gpu only applies to the docker runtime; the native runtime ignores it")
    output_dir = ensure_writable_dir(options.output_dir)
    names = [*OUTPUT_FILES, *([ALL_CLASSIFICATION] if options.save_all_classification else [])]
    for name in names:
        check_output_file(output_dir / name)
    ensure_writable_dir(options.intermediate_results_dir)
    for kind, submissions in found.items():
        logging.info("%ss: %s", kind, ", ".join(s.name for s in submissions) or "none")
    return Competition(
        options,
        dataset,
        batches,
        found[ATTACK],
        found[TARGETED_ATTACK],
        found[DEFENSE],
        skipped,
        runner.Runtime(
            options.runtime,
            options.gpu,
            options.grace_period,
            options.docker_memory,
            options.docker_cpus,
        ),
    )


@dataclass
class Competition:
    """A prepared run."""

    options: Options
    dataset: Dataset
    batches: list[Batch]
    attacks: list[Submission]
    targeted_attacks: list[Submission]
    defenses: list[Submission]
    skipped: dict[str, str]
    runtime: runner.Runtime
    problems: list[str] = field(default_factory=list)
    dataset_changes: dict[str, str] = field(default_factory=dict)
    secret: bytes = b""

    @functools.cached_property
    def dataset_files(self) -> tuple[tuple[str, Path, str], ...]:
        """(file name, path, digest) of every clean image: what a worker checks after each
        piece, and each node before any (built once, not per piece)."""
        return tuple((i.file_name, i.path, i.digest) for i in self.dataset.images)

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.options.intermediate_results_dir).absolute())

    def run(self, executor: Executor | None = None, progress: Progress | None = None) -> Scores:
        """Run what is not finished yet on `executor` (default: one piece after another in
        this process), score everything and write the result files.

        The attack pieces run first, then the defense pieces on the pools of their
        images; within each phase the pieces run side by side where the executor
        allows. Only this process writes records, pools and results; the outputs do
        not depend on the executor or on the order pieces finish in. `progress(done,
        total, label)` is called as each piece finishes (label None: `total` grew).
        """
        executor = executor or LocalExecutor()
        self.problems, self.dataset_changes = [], {}
        containment.become_subreaper()
        with self.layout.locked():
            executor.on_every_node(containment.end_leftovers, self.layout.root)
            self.secret = self.layout.secret()
            store = self.layout.store
            for image in self.dataset.images:
                store.read(image.digest, [image.path], what=str(image.path))
            counter = _Counter(progress)
            attack_plans = [
                self._attack_plan(attack, batch)
                for attack in [*self.attacks, *self.targeted_attacks]
                for batch in self.batches
            ]
            attack_pieces = self._complete(attack_plans, executor, counter)
            pools = {
                batch.index: self._pool(
                    batch, [piece for piece in attack_pieces if piece.batch == batch.index]
                )
                for batch in self.batches
            }
            parts = [
                (defense, batch, index, part)
                for defense in self.defenses
                for batch in self.batches
                for index, part in enumerate(pools[batch.index])
            ]
            defense_plans = [self._defense_plan(*item) for item in parts]
            defense_pieces = self._complete(defense_plans, executor, counter)
            classifications = [
                Classification(
                    defense.name,
                    image.attack,
                    image.targeted,
                    image.image_id,
                    piece.output.labels[_stem(image)],
                )
                for (defense, _, _, part), piece in zip(parts, defense_pieces, strict=True)
                for image in part
                if _stem(image) in piece.output.labels
            ]
        if self.dataset_changes:
            changed = sorted(self.dataset_changes)
            first = self.dataset_changes[changed[0]]
            self.problems.append(
                f"dataset_dir changed during the run: {listing(changed)} no longer match "
                f"what was read at the start (first seen after {first}); the run used its "
                "own copies"
            )
        results = Results(
            dataset=self.dataset,
            attacks=[s.name for s in self.attacks],
            targeted_attacks=[s.name for s in self.targeted_attacks],
            defenses=[s.name for s in self.defenses],
            attack_pieces=attack_pieces,
            defense_pieces=defense_pieces,
            classifications=classifications,
            settings=self._settings(),
            skipped=self.skipped,
            problems=self.problems,
        )
        scores = score(results)
        scores.write(
            Path(self.options.output_dir),
            save_all_classification=self.options.save_all_classification,
        )
        return scores

    def _complete(
        self, plans: list[_Plan[PieceT]], executor: Executor, counter: _Counter
    ) -> list[PieceT]:
        """Run the plans' pieces that are not finished on `executor`, sealing each one's
        record as it finishes; then note every piece's problems in the plans' order."""
        runs: dict[str, PieceRun] = {}
        todo = {plan.label: plan for plan in plans if plan.piece is None}
        counter.grow(len(todo))
        units = (Unit(plan.label, run_piece, (plan.task,)) for plan in todo.values())
        for outcome in executor.run(units):
            plan, run = todo[outcome.key], outcome.value
            plan.piece = plan.build(run)
            runs[plan.label] = run
            record = {**plan.piece.record(plan.key), "execution": outcome.record()}
            save_record(plan.folder, record, self.secret)
            logging.info(
                "%s: %s, %.1f s (%s)",
                plan.label,
                run.outcome.status,
                run.outcome.seconds,
                outcome.worker,
            )
            counter.advance(plan.label)
        pieces = []
        for plan in plans:
            assert plan.piece is not None, f"{plan.label} did not run"
            finished = runs.get(plan.label)
            issues = []
            if finished is not None:
                for name in finished.changed_dataset:
                    self.dataset_changes.setdefault(name, plan.label)
                if finished.changed_input:
                    changed = listing(list(finished.changed_input))
                    issues.append(f"changed its input ({changed}); no other piece saw the change")
            self._note(plan.label, plan.describe(plan.piece, issues))
            pieces.append(plan.piece)
        return pieces

    def check_shared(self, executor: Executor) -> None:
        """Refuse, before any piece, an executor whose nodes do not all see what this
        process read (the dataset's images, the submissions' entry points) and this
        intermediate directory: `InputError` naming each node and what it lacks."""
        root = self.layout.root
        token = secrets.token_hex(16)
        probe = root / SHARED_PROBE
        write_text_atomic(probe, token + "\n")
        entry_points = tuple(
            (s.name, s.directory / s.entry_point)
            for s in (*self.attacks, *self.targeted_attacks, *self.defenses)
        )
        try:
            seen = executor.on_every_node(unshared, self.dataset_files, entry_points, probe, token)
        finally:
            probe.unlink(missing_ok=True)
        refuse_unshared(
            seen,
            "the competition's files",
            "dataset_dir, the submissions and intermediate_results_dir",
        )

    def _settings(self) -> dict[str, Any]:
        options = self.options
        return {
            "epsilon": CYCLE if options.epsilon.strip() == CYCLE else int(options.epsilon),
            "batch_size": options.batch_size,
            "time_limit": options.time_limit or None,
            "grace_period": options.grace_period,
            "runtime": options.runtime,
            "gpu": options.gpu,
            "batches": [
                {"batch": b.index, "epsilon": b.epsilon, "images": len(b.images)}
                for b in self.batches
            ],
        }

    def _reusable(self, record: dict[str, Any] | None) -> bool:
        if record is None:
            return False
        return not (self.options.retry_failed and record["outcome"]["status"] != runner.OK)

    def _note(self, label: str, issues: list[str]) -> None:
        if issues:
            problem = f"{label}: {'; '.join(issues)}"
            self.problems.append(problem)
            logging.warning("%s", problem)

    def _task(
        self,
        label: str,
        submission: Submission,
        folder: Path,
        files: dict[str, str],
        sources: dict[str, tuple[Path, ...]],
        *,
        batch: Batch | None = None,
        names: frozenset[str] = frozenset(),
    ) -> PieceTask:
        return PieceTask(
            label=label,
            submission=submission,
            runtime=self.runtime,
            folder=folder,
            files=files,
            sources=sources,
            store=self.layout.store,
            ledger_dir=self.layout.root,
            time_limit=self.options.time_limit or None,
            grace_period=self.options.grace_period,
            dataset=self.dataset_files,
            batch=batch,
            names=names,
        )

    def _attack_plan(self, attack: Submission, batch: Batch) -> _Plan[AttackPiece]:
        targeted = attack.targeted
        folder = self.layout.attack_piece(attack.name, batch, targeted=targeted)
        key = {
            "submission": attack.identity(self.runtime.image(attack)),
            "batch": batch.index,
            "epsilon": batch.epsilon,
            "input": batch.digest(targeted=targeted),
        }
        kind = attack.kind.replace("_", " ")
        label = f"{kind} {attack.name} {batch.name} (epsilon {batch.epsilon})"
        record = load_record(folder, key, self.secret)
        store = self.layout.store

        def build(run: PieceRun) -> AttackPiece:
            assert isinstance(run.output, AttackOutput)
            return AttackPiece(
                attack.name,
                targeted,
                batch.index,
                batch.epsilon,
                len(batch.images),
                folder,
                run.outcome,
                run.output,
            )

        plan = _Plan(label, key, folder, build, _describe_attack)
        if record and self._reusable(record):
            piece = build(
                PieceRun(
                    runner.Outcome.from_json(record["outcome"]),
                    AttackOutput.from_json(record["output"]),
                    (),
                    (),
                )
            )
            if piece.clipped_intact(store):
                logging.info("%s: finished earlier", label)
                plan.piece = piece
                return plan
        files = {image.file_name: image.digest for image in batch.images}
        if targeted:
            files[TARGET_CLASS_FILE] = store.put(batch.target_class_csv())
        sources: dict[str, tuple[Path, ...]] = {
            image.file_name: (image.path,) for image in batch.images
        }
        plan.task = self._task(label, attack, folder, files, sources, batch=batch)
        return plan

    def _pool(self, batch: Batch, pieces: list[AttackPiece]) -> list[list[AdversarialImage]]:
        """The batch's pool, in its parts' folders (kept when they already hold it)."""
        produced = [
            (piece.attack, piece.targeted, image_id, piece.clipped_file(image_id), clipped.digest)
            for piece in pieces
            for image_id, clipped in piece.output.images.items()
        ]
        parts = pool(batch, produced, self.options.batch_size)
        folder = self.layout.pool(batch)
        folder.mkdir(parents=True, exist_ok=True)
        expected = {_part_name(index) for index in range(len(parts))}
        for entry in folder.iterdir():
            if entry.name not in expected and entry.name != MAPPING_FILE:
                remove(entry)
        for index, part in enumerate(parts):
            self._place_part(batch, index, part)
        mapping = {
            image.name: {
                "part": index,
                "attack": image.attack,
                "targeted": image.targeted,
                "image_id": image.image_id,
            }
            for index, part in enumerate(parts)
            for image in part
        }
        write_text_atomic(folder / MAPPING_FILE, json.dumps(mapping, indent=1) + "\n")
        return parts

    def _place_part(
        self, batch: Batch, index: int, part: list[AdversarialImage]
    ) -> tuple[dict[str, str], Path]:
        """The files of part `index` of the batch's pool (name -> digest), and the folder
        that now holds them, rebuilt from the store where it differs."""
        files = {image.name: image.digest for image in part}
        folder = place_files(
            self.layout.pool(batch) / _part_name(index),
            files,
            self.layout.store,
            {image.name: [image.source] for image in part},
        )
        return files, folder

    def _defense_plan(
        self, defense: Submission, batch: Batch, index: int, part: list[AdversarialImage]
    ) -> _Plan[DefensePiece]:
        folder = self.layout.defense_piece(defense.name, batch, index)
        key = {
            "submission": defense.identity(self.runtime.image(defense)),
            "batch": batch.index,
            "part": index,
            "input": part_digest(part),
        }
        label = f"defense {defense.name} {batch.name} part {index:02d}"
        record = load_record(folder, key, self.secret)

        def build(run: PieceRun) -> DefensePiece:
            assert isinstance(run.output, DefenseOutput)
            return DefensePiece(
                defense.name, batch.index, index, batch.epsilon, len(part), run.outcome, run.output
            )

        plan = _Plan(label, key, folder, build, _describe_defense)
        if record and self._reusable(record):
            logging.info("%s: finished earlier", label)
            plan.piece = build(
                PieceRun(
                    runner.Outcome.from_json(record["outcome"]),
                    DefenseOutput.from_json(record["output"]),
                    (),
                    (),
                )
            )
            return plan
        files = {image.name: image.digest for image in part}
        sources: dict[str, tuple[Path, ...]] = {image.name: (image.source,) for image in part}
        names = frozenset(_stem(image) for image in part)
        plan.task = self._task(label, defense, folder, files, sources, names=names)
        return plan


PieceT = TypeVar("PieceT", AttackPiece, DefensePiece)
Progress = Callable[[int, int, "str | None"], None]


@dataclass
class _Plan(Generic[PieceT]):
    """A piece as the driver plans it: reused (`piece` set) or to run (`task`); `build`
    makes the piece of a worker's `PieceRun`, `describe` lists its problems."""

    label: str
    key: dict[str, Any]
    folder: Path
    build: Callable[[PieceRun], PieceT]
    describe: Callable[[PieceT, list[str]], list[str]]
    piece: PieceT | None = None
    task: PieceTask | None = None


@dataclass
class _Counter:
    """Finished pieces for `progress`, over a total that grows phase by phase."""

    progress: Progress | None
    done: int = 0
    total: int = 0

    def grow(self, count: int) -> None:
        self.total += count
        if self.progress:
            self.progress(self.done, self.total, None)

    def advance(self, label: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, label)


def _describe_attack(piece: AttackPiece, issues: list[str]) -> list[str]:
    """What went wrong in an attack piece: its outcome, then `issues`, then its images."""
    found = [] if piece.outcome.status == runner.OK else [piece.outcome.describe()]
    found += issues
    if piece.output.missing:
        missing = piece.output.missing
        found.append(f"no image for {len(missing)} of {piece.size}: {listing(missing)}")
    if piece.output.unreadable:
        unreadable = [f"{name} ({why})" for name, why in piece.output.unreadable.items()]
        found.append(f"unreadable: {listing(unreadable)}")
    if piece.output.resized:
        found.append(f"resized to the clean size: {listing(sorted(piece.output.resized))}")
    return found


def _describe_defense(piece: DefensePiece, issues: list[str]) -> list[str]:
    """What went wrong in a defense piece: its outcome, then `issues`, then its rows."""
    output, size = piece.output, piece.size
    found = [] if piece.outcome.status == runner.OK else [piece.outcome.describe()]
    found += issues
    if output.refused:
        found.append(output.refused)
    elif not output.wrote_file:
        found.append(f"wrote no {RESULT_FILE}")
    elif len(output.labels) < size:
        found.append(f"no row for {size - len(output.labels)} of {size} images")
    if output.malformed_rows:
        found.append(f"skipped {output.malformed_rows} malformed row(s)")
    if output.unknown_names:
        unknown = output.unknown_names
        found.append(f"{len(unknown)} row(s) for images not in its input: {listing(unknown)}")
    return found


def _stem(image: AdversarialImage) -> str:
    return image.name.removesuffix(".png")


def _part_name(index: int) -> str:
    return f"part_{index:02d}"
