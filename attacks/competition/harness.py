"""A competition run: check everything that can be checked first (`prepare`), then run
every piece, pool the attacks' images, score and write the results (`Competition.run`).

Order as in the dev toolkit: the non-targeted attacks, the targeted ones, then the
defenses; each on every batch (defenses: on every part of the batch's pool). A piece
that crashes, hangs or writes nothing is recorded with its reason and the run goes
on; a finished piece is reused by a later run on the same intermediate directory.

Submissions are treated as hostile. Each piece gets its inputs rebuilt from the
harness's store and checked after it ran (a change is reported and never reaches
another piece); the dataset folder is checked after every piece (a change is
reported, exit 1, and the run goes on with the copies read at the start); records
are sealed; every process a piece started ends with it; and the intermediate and
output folders may not overlap the dataset or a submission, so that nothing the
harness removes is an input. See `runner`, `containment`, `store` and `pieces`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from absl import logging

from attacks.competition import containment, runner
from attacks.competition.adversarial import (
    AdversarialImage,
    AttackOutput,
    clip_outputs,
    part_digest,
    pool,
)
from attacks.competition.batches import (
    BATCH_SIZE,
    CYCLE,
    TARGET_CLASS_FILE,
    Batch,
    Dataset,
    listing,
    parse_epsilon,
    read_dataset,
)
from attacks.competition.layout import Layout, fresh_dir, remove
from attacks.competition.pieces import (
    CLIPPED_DIR,
    RESULT_FILE,
    AttackPiece,
    DefenseOutput,
    DefensePiece,
    load_record,
    read_defense_output,
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
from attacks.competition.store import changed_files, digest_of, place_files
from attacks.competition.submissions import (
    ATTACK,
    DEFENSE,
    TARGETED_ATTACK,
    Submission,
    discover,
)
from defense.common.errors import ParameterError
from defense.common.files import check_output_file, ensure_writable_dir, write_text_atomic

TIME_LIMIT = 500.0
GRACE_PERIOD = 10.0
# A day: the longest time limit or grace period that means anything for one piece.
MAX_SECONDS = 86_400.0
MAPPING_FILE = "mapping.json"


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
            found[kind], skipped_here = discover(
                directory, kind, parameter=parameter, docker=docker
            )
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

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.options.intermediate_results_dir))

    def run(self) -> Scores:
        """Run what is not finished yet, score everything and write the result files."""
        self.problems, self.dataset_changes = [], {}
        containment.become_subreaper()
        with self.layout.locked():
            containment.end_leftovers(self.layout.root)
            self.secret = self.layout.secret()
            store = self.layout.store
            for image in self.dataset.images:
                store.read(image.digest, [image.path], what=str(image.path))
            attack_pieces = [
                self._attack_piece(attack, batch)
                for attack in [*self.attacks, *self.targeted_attacks]
                for batch in self.batches
            ]
            pools = {
                batch.index: self._pool(
                    batch, [piece for piece in attack_pieces if piece.batch == batch.index]
                )
                for batch in self.batches
            }
            defense_pieces, classifications = [], []
            for defense in self.defenses:
                for batch in self.batches:
                    for index, part in enumerate(pools[batch.index]):
                        piece = self._defense_piece(defense, batch, index, part)
                        defense_pieces.append(piece)
                        classifications += [
                            Classification(
                                defense.name,
                                image.attack,
                                image.targeted,
                                image.image_id,
                                piece.output.labels[_stem(image)],
                            )
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

    def _run(
        self,
        invocation: runner.Invocation,
        folder: Path,
        label: str,
        input_dir: Path,
        files: dict[str, str],
    ) -> tuple[runner.Outcome, list[str]]:
        """Run a piece on `input_dir` (which holds `files`, name -> digest); its outcome,
        and what it changed of its input and of the dataset folder."""
        limit = self.options.time_limit or None
        outcome = runner.run(
            invocation,
            time_limit=limit,
            grace_period=self.options.grace_period,
            log_dir=folder,
            ledger_dir=self.layout.root,
        )
        issues = []
        changed = changed_files(input_dir, files)
        if changed:
            issues.append(f"changed its input ({listing(changed)}); restored before the next piece")
        for image in self.dataset.images:
            if image.file_name not in self.dataset_changes and (
                digest_of(image.path) != image.digest
            ):
                self.dataset_changes[image.file_name] = label
        return outcome, issues

    def _note(self, label: str, issues: list[str]) -> None:
        if issues:
            problem = f"{label}: {'; '.join(issues)}"
            self.problems.append(problem)
            logging.warning("%s", problem)

    def _attack_piece(self, attack: Submission, batch: Batch) -> AttackPiece:
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
        piece = None
        store = self.layout.store
        tampered: list[str] = []
        if record and self._reusable(record):
            piece = AttackPiece(
                attack.name,
                targeted,
                batch.index,
                batch.epsilon,
                len(batch.images),
                folder,
                runner.Outcome.from_json(record["outcome"]),
                AttackOutput.from_json(record["output"]),
            )
        if piece and piece.clipped_intact(store):
            logging.info("%s: finished earlier", label)
        else:
            files = {image.file_name: image.digest for image in batch.images}
            if targeted:
                files[TARGET_CLASS_FILE] = store.put(batch.target_class_csv())
            input_dir = place_files(
                self.layout.dataset_input(batch, targeted=targeted),
                files,
                store,
                {image.file_name: [image.path] for image in batch.images},
            )
            fresh_dir(folder)
            written = fresh_dir(folder / "output", open_to_all=self.runtime.kind == runner.DOCKER)
            logging.info("%s: running", label)
            outcome, tampered = self._run(
                self.runtime.attack(attack, input_dir, written, batch.epsilon),
                folder,
                label,
                input_dir,
                files,
            )
            piece = AttackPiece(
                attack.name,
                targeted,
                batch.index,
                batch.epsilon,
                len(batch.images),
                folder,
                outcome,
                clip_outputs(written, batch, fresh_dir(folder / CLIPPED_DIR), store),
            )
            save_record(folder, piece.record(key), self.secret)
        logging.info(
            "%s: %s, %d of %d images, %.1f s",
            label,
            piece.outcome.status,
            len(piece.output.images),
            piece.size,
            piece.outcome.seconds,
        )
        issues = [] if piece.outcome.status == runner.OK else [piece.outcome.describe()]
        issues += tampered
        if piece.output.missing:
            missing = piece.output.missing
            issues.append(f"no image for {len(missing)} of {piece.size}: {listing(missing)}")
        if piece.output.unreadable:
            unreadable = [f"{name} ({why})" for name, why in piece.output.unreadable.items()]
            issues.append(f"unreadable: {listing(unreadable)}")
        if piece.output.resized:
            issues.append(f"resized to the clean size: {listing(sorted(piece.output.resized))}")
        self._note(label, issues)
        return piece

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

    def _defense_piece(
        self, defense: Submission, batch: Batch, index: int, part: list[AdversarialImage]
    ) -> DefensePiece:
        folder = self.layout.defense_piece(defense.name, batch, index)
        key = {
            "submission": defense.identity(self.runtime.image(defense)),
            "batch": batch.index,
            "part": index,
            "input": part_digest(part),
        }
        label = f"defense {defense.name} {batch.name} part {index:02d}"
        record = load_record(folder, key, self.secret)
        tampered: list[str] = []
        if record and self._reusable(record):
            outcome = runner.Outcome.from_json(record["outcome"])
            output = DefenseOutput.from_json(record["output"])
            logging.info("%s: finished earlier", label)
        else:
            record = None
            files, input_dir = self._place_part(batch, index, part)
            fresh_dir(folder)
            written = fresh_dir(folder / "output", open_to_all=self.runtime.kind == runner.DOCKER)
            logging.info("%s: running on %d images", label, len(part))
            outcome, tampered = self._run(
                self.runtime.defense(defense, input_dir, written / RESULT_FILE),
                folder,
                label,
                input_dir,
                files,
            )
            output = read_defense_output(written / RESULT_FILE, {_stem(image) for image in part})
        piece = DefensePiece(
            defense.name, batch.index, index, batch.epsilon, len(part), outcome, output
        )
        if record is None:
            save_record(folder, piece.record(key), self.secret)
        logging.info(
            "%s: %s, %d of %d images classified, %.1f s",
            label,
            outcome.status,
            len(output.labels),
            len(part),
            outcome.seconds,
        )
        issues = [] if outcome.status == runner.OK else [outcome.describe()]
        issues += tampered
        if output.refused:
            issues.append(output.refused)
        elif not output.wrote_file:
            issues.append(f"wrote no {RESULT_FILE}")
        elif len(output.labels) < len(part):
            issues.append(f"no row for {len(part) - len(output.labels)} of {len(part)} images")
        if output.malformed_rows:
            issues.append(f"skipped {output.malformed_rows} malformed row(s)")
        if output.unknown_names:
            unknown = output.unknown_names
            issues.append(f"{len(unknown)} row(s) for images not in its input: {listing(unknown)}")
        self._note(label, issues)
        return piece


def _stem(image: AdversarialImage) -> str:
    return image.name.removesuffix(".png")


def _part_name(index: int) -> str:
    return f"part_{index:02d}"
