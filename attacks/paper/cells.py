"""The cells a run computes, and the results file they are stored in as they finish.

A cell is named by its coordinates (table, model, row, source: float or PNG
adversarials) and the digest of its image set, and carries the settings that
decide its numbers (attack and resolved hyper-parameters, weights, sizes, defense
config, runs, seed). The results file holds one JSON object per line, one line
per finished cell, and is rewritten atomically after each, so an interruption
loses at most the cell that was running; a rerun computes only the cells whose
key (coordinates and images) has no line.

A line at the same coordinates with other settings means the file was made with
other settings: the run is refused before anything is computed, naming what
differs, because mixing them would give a table of two experiments. Lines of
other coordinates or image sets (another --limit, another table) are kept and
left alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from defense.common.errors import InputError
from defense.common.files import check_output_file, read_text_bounded, reason, write_text_atomic

RESULTS_FILE = "results.jsonl"
SOURCES = ("float", "png")
_RESULT_FIELDS = ("target", "defense", "l2", "linf", "seconds")
_MAX_REPORTED = 5


@dataclass(frozen=True)
class Cell:
    """One cell to compute: where it goes, on which images, with which settings."""

    table: int
    model: str
    row: str
    source: str
    images: str
    count: int
    settings: Mapping[str, Any]

    @property
    def coordinates(self) -> tuple[int, str, str, str]:
        """Where the cell goes: table, model, row and source."""
        return self.table, self.model, self.row, self.source

    @property
    def key(self) -> tuple[int, str, str, str, str]:
        """What names a result: the coordinates and the image set."""
        return (*self.coordinates, self.images)

    def describe(self) -> str:
        """Table, row and model, for messages and the progress bar."""
        return f"table {self.table} {self.row} on {self.model}"


def normalized(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True))


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted names: {"params": {"epsilon": 2}} -> {"params.epsilon": 2}."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings that differ, as `name: X in the file, Y now`."""
    old, new = _flat(stored), _flat(current)
    return [
        f"{name}: {old.get(name, '(none)')!r} in the file, {new.get(name, '(none)')!r} now"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


class SettingsMismatch(InputError):
    """The results file holds cells of this run's coordinates made with other settings."""


def _check_record(record: object) -> str | None:
    """Why a parsed line is not a cell result (None: it is one)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    kinds = {
        "table": int,
        "model": str,
        "row": str,
        "source": str,
        "images": str,
        "count": int,
        "settings": dict,
        "target": float,
        "defense": float,
    }
    for name, kind in kinds.items():
        value = record.get(name)
        if kind is float:
            if not isinstance(value, int | float) or not math.isfinite(value):
                return f"{name} is not a number"
        elif not isinstance(value, kind) or isinstance(value, bool):
            return f"{name} is missing or not {kind.__name__}"
    return None


class ResultsFile:
    """The finished cells of a results file (JSON lines), added to as cells finish.

    Checked when opened, before any cell runs: the file must be absent or a writable
    regular file (a FIFO, a device or a read-only file is refused at once rather than
    after the first cell), and an existing one is read without blocking, bounded."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_output_file(path)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self.records = self._read()

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = read_text_bounded(self.path)
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read results file {self.path}: {reason(error)}") from error
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problem: str | None = f"not JSON ({error.msg})"
            else:
                problem = _check_record(record)
            if problem is not None:
                raise InputError(
                    f"results file {self.path} line {number} is not a cell result ({problem}); "
                    "not written by reproduce_paper, or damaged: move it away or give "
                    "another output directory"
                )
            records.append(record)
        return records

    def _key(self, record: Mapping[str, Any]) -> tuple[Any, ...]:
        return record["table"], record["model"], record["row"], record["source"], record["images"]

    def check(self, cells: Iterable[Cell]) -> None:
        """Refuse, naming what differs, when a line at one of the cells' coordinates was
        made with other settings."""
        problems = []
        for cell in cells:
            settings = normalized(cell.settings)
            for record in self.records:
                coordinates = (record["table"], record["model"], record["row"], record["source"])
                if coordinates == cell.coordinates and record["settings"] != settings:
                    changed = "; ".join(differences(record["settings"], settings))
                    problems.append(f"{cell.describe()} ({cell.source}): {changed}")
                    break
        if problems:
            shown = "\n  ".join(problems[:_MAX_REPORTED])
            more = len(problems) - _MAX_REPORTED
            raise SettingsMismatch(
                f"results file {self.path} holds results made with other settings, which are "
                f"not mixed with this run's:\n  {shown}"
                + (f"\n  and {more} more cell(s)" if more > 0 else "")
                + "\nGive another output directory, or rerun with the settings the file was "
                "made with."
            )

    def result(self, cell: Cell) -> dict[str, Any] | None:
        """The stored line of `cell` (same key), or None when it has not been computed."""
        for record in reversed(self.records):
            if self._key(record) == cell.key:
                return record
        return None

    def add(
        self, cell: Cell, result: Mapping[str, Any], ran: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a finished cell (with `ran`: where and how it ran, e.g. worker, node,
        seconds, attempts): the file is rewritten atomically with its line added."""
        record = {
            "table": cell.table,
            "model": cell.model,
            "row": cell.row,
            "source": cell.source,
            "images": cell.images,
            "count": cell.count,
            "settings": normalized(cell.settings),
            **{name: result[name] for name in _RESULT_FIELDS},
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if ran is not None:
            record["ran"] = dict(ran)
        self.records.append(record)
        write_text_atomic(
            self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)
        )
        return record


def pending(cells: Sequence[Cell], results: ResultsFile) -> list[Cell]:
    """The cells that have no stored result yet."""
    return [cell for cell in cells if results.result(cell) is None]
