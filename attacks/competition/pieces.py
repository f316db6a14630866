"""The records of finished pieces, and reading a defense's result file.

A piece is an attack on one batch, or a defense on one part of a batch's pool. Its
record (`piece.json` in its folder) keeps its key — the submission (name, type,
entry point, container image), the batch (for an attack, with its epsilon; for a
defense, the part) and the digest of the piece's input files — with the outcome
and what was read from the outputs. A later run reuses a record only when the key
it would use is the same: a defense piece whose input images did not change is not
rerun, whatever changed elsewhere.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks.competition.adversarial import AttackOutput
from attacks.competition.batches import sha256_file
from attacks.competition.runner import Outcome
from defense.common.files import write_text_atomic

RECORD = "piece.json"
RESULT_FILE = "result.csv"
CLIPPED_DIR = "clipped"
_SUFFIXES = (".png", ".jpg")


@dataclass
class DefenseOutput:
    """Labels a defense wrote, by image name without suffix, and what was wrong."""

    labels: dict[str, int] = field(default_factory=dict)
    wrote_file: bool = True
    malformed_rows: int = 0
    unknown_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DefenseOutput:
        return cls(**data)


def read_defense_output(path: Path, names: Collection[str]) -> DefenseOutput:
    """A defense's `<name>,<label>` rows for the images `names` (without suffix), as the
    toolkit reads them: rows with fewer than two fields or a label that is not an
    integer are skipped (and counted), a trailing .png or .jpg is dropped from the
    name, a repeated name overwrites; rows for other names are counted, not used."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:  # none, or not a file
        return DefenseOutput(wrote_file=False)
    result = DefenseOutput()
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        try:
            name, label = row[0], int(row[1])
        except (IndexError, ValueError):
            result.malformed_rows += 1
            continue
        if name.endswith(_SUFFIXES):
            name = name[: name.rfind(".")]
        if name in names:
            result.labels[name] = label
        else:
            result.unknown_names.append(name)
    return result


def load_record(folder: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record in `folder` if it is readable and has `key`, else None (run the piece)."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def save_record(folder: Path, record: Mapping[str, Any]) -> None:
    write_text_atomic(folder / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class AttackPiece:
    """A finished attack piece."""

    attack: str
    targeted: bool
    batch: int
    epsilon: int
    size: int
    folder: Path
    outcome: Outcome
    output: AttackOutput

    def clipped_file(self, image_id: str) -> Path:
        """Where the clipped adversarial version of `image_id` is."""
        return self.folder / CLIPPED_DIR / f"{image_id}.png"

    def clipped_intact(self) -> bool:
        """Whether the clipped images are still as recorded (a reused piece needs them)."""
        return all(
            self.clipped_file(image_id).is_file()
            and sha256_file(self.clipped_file(image_id)) == clipped.digest
            for image_id, clipped in self.output.images.items()
        )

    def record(self, key: Mapping[str, Any]) -> dict[str, Any]:
        return {"key": key, "outcome": self.outcome.to_json(), "output": self.output.to_json()}


@dataclass(frozen=True)
class DefensePiece:
    """A finished defense piece on `size` images of part `part` of batch `batch`."""

    defense: str
    batch: int
    part: int
    epsilon: int
    size: int
    outcome: Outcome
    output: DefenseOutput

    def record(self, key: Mapping[str, Any]) -> dict[str, Any]:
        return {"key": key, "outcome": self.outcome.to_json(), "output": self.output.to_json()}
