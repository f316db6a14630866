"""The records of finished pieces, and reading a defense's result file.

A piece is an attack on one batch, or a defense on one part of a batch's pool. Its
record (`piece.json` in its folder) keeps its key — the submission (name, type,
entry point, container image), the batch (for an attack, with its epsilon; for a
defense, the part) and the digest of the piece's input files — with the outcome
and what was read from the outputs. A later run reuses a record only when the key
it would use is the same: a defense piece whose input images did not change is not
rerun, whatever changed elsewhere.

Records are sealed: `seal` is an HMAC-SHA256 of the record under the run
directory's secret, so a record that a submission wrote or changed (another
piece's, or its own) is found and the piece runs again. The secret is a file of
the intermediate directory, out of reach of the docker runtime's containers; a
native submission, which runs with the harness's privileges, could read it.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from absl import logging

from attacks.competition.adversarial import AttackOutput
from attacks.competition.runner import Outcome
from attacks.competition.store import Store
from defense.common.files import csv_rows, parse_json, read_bounded, reason, write_text_atomic

RECORD = "piece.json"
RESULT_FILE = "result.csv"
CLIPPED_DIR = "clipped"
SEAL = "seal"
_SUFFIXES = (".png", ".jpg")
# A result.csv for 100 images is a few KiB; anything near this is not one.
MAX_RESULT_BYTES = 16 << 20
MAX_RECORD_BYTES = 64 << 20


@dataclass
class DefenseOutput:
    """Labels a defense wrote, by image name without suffix, and what was wrong."""

    labels: dict[str, int] = field(default_factory=dict)
    wrote_file: bool = True
    malformed_rows: int = 0
    unknown_names: list[str] = field(default_factory=list)
    refused: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DefenseOutput:
        return cls(**data)


def read_defense_output(path: Path, names: Collection[str]) -> DefenseOutput:
    """A defense's `<name>,<label>` rows for the images `names` (without suffix), as the
    toolkit reads them: rows with fewer than two fields, a label that is not an
    integer or a field the csv module refuses (over 128 KiB) are skipped (and
    counted), a trailing .png or .jpg is dropped from the name, a repeated name
    overwrites; rows for other names are counted, not used. A result file that is
    not a regular file or is over `MAX_RESULT_BYTES` is refused, with the reason."""
    try:
        data = read_bounded(path, max_bytes=MAX_RESULT_BYTES)
    except FileNotFoundError:
        return DefenseOutput(wrote_file=False)
    except OSError as error:
        return DefenseOutput(wrote_file=False, refused=f"{RESULT_FILE} is {reason(error)}")
    result = DefenseOutput()
    for _, row in csv_rows(data.decode("utf-8", "replace")):
        if isinstance(row, csv.Error):
            result.malformed_rows += 1
            continue
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


def _seal(record: Mapping[str, Any], secret: bytes) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != SEAL}, sort_keys=True)
    return hmac.new(secret, body.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def load_record(folder: Path, key: Mapping[str, Any], secret: bytes) -> dict[str, Any] | None:
    """The record in `folder` if it is readable, sealed under `secret` and has `key`,
    else None (run the piece). A record whose seal does not match is logged."""
    path = folder / RECORD
    try:
        record = parse_json(read_bounded(path, max_bytes=MAX_RECORD_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logging.warning("%s cannot be read (%s); running the piece again", path, reason(error))
        return None
    if not isinstance(record, dict):
        return None
    if not hmac.compare_digest(str(record.get(SEAL, "")), _seal(record, secret)):
        logging.warning("%s was changed outside the harness; running the piece again", path)
        return None
    return record if record.get("key") == key else None


def save_record(folder: Path, record: Mapping[str, Any], secret: bytes) -> None:
    """Write the record, sealed under `secret`."""
    sealed = {**record, SEAL: _seal(record, secret)}
    write_text_atomic(folder / RECORD, json.dumps(sealed, indent=1, sort_keys=True) + "\n")


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

    def clipped_intact(self, store: Store) -> bool:
        """Whether the store holds the clipped images as recorded (repaired from the
        piece's `clipped/` files where they are intact); a reused piece needs them."""
        return all(
            store.keep(clipped.digest, [self.clipped_file(image_id)])
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
