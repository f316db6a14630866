"""A competition run: check everything that can be checked first (`prepare`), then run
every piece, pool the attacks' images, score and write the results (`Competition.run`).

Order as in the dev toolkit: the non-targeted attacks, the targeted ones, then the
defenses; each on every batch (defenses: on every part of the batch's pool). A piece
that crashes, hangs or writes nothing is recorded with its reason and the run goes
on; a finished piece is reused by a later run on the same intermediate directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from absl import logging

from attacks.competition import runner
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
    sha256_bytes,
)
from attacks.competition.layout import Layout, fresh_dir, place_files
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


def _check_options(options: Options) -> None:
    if options.time_limit < 0:
        raise ParameterError(
            f"time_limit must be >= 0 seconds (0: no limit), got {options.time_limit:g}",
            "time_limit",
        )
    if options.grace_period < 0:
        raise ParameterError(
            f"grace_period must be >= 0 seconds, got {options.grace_period:g}", "grace_period"
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
        runner.Runtime(options.runtime, options.gpu, options.grace_period),
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

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.options.intermediate_results_dir))

    def run(self) -> Scores:
        """Run what is not finished yet, score everything and write the result files."""
        self.problems = []
        with self.layout.locked():
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

    def _run(self, invocation: runner.Invocation, folder: Path) -> runner.Outcome:
        limit = self.options.time_limit or None
        return runner.run(
            invocation, time_limit=limit, grace_period=self.options.grace_period, log_dir=folder
        )

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
        record = load_record(folder, key)
        piece = None
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
        if piece and piece.clipped_intact():
            logging.info("%s: finished earlier", label)
        else:
            files: dict[str, tuple[str, Path | bytes]] = {
                image.file_name: (image.digest, image.path) for image in batch.images
            }
            if targeted:
                targets = batch.target_class_csv()
                files[TARGET_CLASS_FILE] = (sha256_bytes(targets), targets)
            input_dir = place_files(self.layout.dataset_input(batch, targeted=targeted), files)
            fresh_dir(folder)
            written = fresh_dir(folder / "output", open_to_all=self.runtime.kind == runner.DOCKER)
            logging.info("%s: running", label)
            outcome = self._run(
                self.runtime.attack(attack, input_dir, written, batch.epsilon), folder
            )
            piece = AttackPiece(
                attack.name,
                targeted,
                batch.index,
                batch.epsilon,
                len(batch.images),
                folder,
                outcome,
                clip_outputs(written, batch, fresh_dir(folder / CLIPPED_DIR)),
            )
            save_record(folder, piece.record(key))
        logging.info(
            "%s: %s, %d of %d images, %.1f s",
            label,
            piece.outcome.status,
            len(piece.output.images),
            piece.size,
            piece.outcome.seconds,
        )
        issues = [] if piece.outcome.status == runner.OK else [piece.outcome.describe()]
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
            if entry.is_dir() and entry.name not in expected:
                shutil.rmtree(entry)
        for index, part in enumerate(parts):
            place_files(
                folder / _part_name(index),
                {image.name: (image.digest, image.source) for image in part},
            )
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
        record = load_record(folder, key)
        if record and self._reusable(record):
            outcome = runner.Outcome.from_json(record["outcome"])
            output = DefenseOutput.from_json(record["output"])
            logging.info("%s: finished earlier", label)
        else:
            record = None
            fresh_dir(folder)
            written = fresh_dir(folder / "output", open_to_all=self.runtime.kind == runner.DOCKER)
            logging.info("%s: running on %d images", label, len(part))
            input_dir = self.layout.pool(batch) / _part_name(index)
            outcome = self._run(
                self.runtime.defense(defense, input_dir, written / RESULT_FILE), folder
            )
            output = read_defense_output(written / RESULT_FILE, {_stem(image) for image in part})
        piece = DefensePiece(
            defense.name, batch.index, index, batch.epsilon, len(part), outcome, output
        )
        if record is None:
            save_record(folder, piece.record(key))
        logging.info(
            "%s: %s, %d of %d images classified, %.1f s",
            label,
            outcome.status,
            len(output.labels),
            len(part),
            outcome.seconds,
        )
        issues = [] if outcome.status == runner.OK else [outcome.describe()]
        if not output.wrote_file:
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
