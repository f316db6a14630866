"""Labels and targets of an image set.

Label files come in two formats, told apart by their first line:
- `<filename>,<label>` lines without a header (the competition's `target_class.csv`
  and the defense's output; extra columns, such as a class name, are ignored);
- the NIPS 2017 dataset CSV, whose header names `ImageId` and the label columns
  (`TrueLabel`, `TargetClass`); the file of image `ImageId` is `ImageId.png`.

Labels use the slim indexing of the 1001-class models: 1..1000 are ImageNet
classes and 0 (background) is never a valid dataset label.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from defense.common.files import csv_rows, read_text_bounded

IMAGENET_CLASSES = 1000
TRUE_LABEL, TARGET_CLASS = "TrueLabel", "TargetClass"
_MAX_REPORTED = 10


class LabelError(ValueError):
    """A label file is unusable, or lacks the label of an image; the message says which."""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_REPORTED])
    return shown + (f" and {len(items) - _MAX_REPORTED} more" if len(items) > _MAX_REPORTED else "")


# One line of a CSV file: its number (from 1) and its fields.
CsvLine = tuple[int, list[str]]


def read_csv_lines(path: str | os.PathLike) -> list[CsvLine]:
    """The non-blank lines of a CSV file (UTF-8, a byte-order mark allowed), numbered
    from 1, with their fields as written. Every reader of label files and of the NIPS
    2017 dataset CSV goes through here; it reads at most `MAX_TEXT_BYTES` of a regular
    file (`read_bounded`) and raises `OSError`, `UnicodeDecodeError` or `csv.Error`
    (naming the line), which each caller words for its own argument."""
    text = read_text_bounded(path, encoding="utf-8-sig")
    lines = []
    for number, row in csv_rows(text):
        if isinstance(row, csv.Error):
            raise csv.Error(f"line {number}: {row}")
        if any(cell.strip() for cell in row):
            lines.append((number, row))
    return lines


def read_labels(
    path: str | os.PathLike,
    *,
    column: str = TRUE_LABEL,
    num_classes: int = IMAGENET_CLASSES,
    first_label: int = 1,
) -> dict[str, int]:
    """Labels by image file name from a `<filename>,<label>` CSV or the NIPS 2017 dataset CSV.

    `column` picks the label column of a dataset CSV (`TrueLabel` or `TargetClass`).
    Labels must be integers in first_label..first_label + num_classes - 1 (slim:
    1..1000). Every bad line is reported, with its number, in one `LabelError`.
    """
    path = Path(path)
    try:
        lines = read_csv_lines(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LabelError(f"cannot read label file {path}: {error}") from error
    return parse_labels(
        lines, path, column=column, num_classes=num_classes, first_label=first_label
    )


def parse_labels(
    lines: list[CsvLine],
    path: str | os.PathLike,
    *,
    column: str = TRUE_LABEL,
    num_classes: int = IMAGENET_CLASSES,
    first_label: int = 1,
) -> dict[str, int]:
    """`read_labels` on lines already read from `path` (`read_csv_lines`)."""
    rows = [(number, [cell.strip() for cell in row]) for number, row in lines]
    name_index, label_index, suffix = 0, 1, ""
    if rows and "ImageId" in rows[0][1]:
        header = rows.pop(0)[1]
        if column not in header:
            raise LabelError(
                f"label file {path} looks like the NIPS 2017 dataset CSV (it has an ImageId "
                f"column) but has no {column} column; its columns: {', '.join(header)}"
            )
        name_index, label_index, suffix = header.index("ImageId"), header.index(column), ".png"
    last_label = first_label + num_classes - 1
    labels: dict[str, int] = {}
    line_of: dict[str, int] = {}
    problems = []
    for number, row in rows:
        if len(row) <= max(name_index, label_index):
            problems.append(f"line {number}: expected <filename>,<label>, got {','.join(row)!r}")
            continue
        name, text_label = row[name_index] + suffix, row[label_index]
        try:
            label = int(text_label)
        except ValueError:
            problems.append(f"line {number}: label {text_label!r} of {name} is not an integer")
            continue
        if not first_label <= label <= last_label:
            problems.append(
                f"line {number}: label {label} of {name} is outside {first_label}..{last_label}"
            )
        elif name in labels and labels[name] != label:
            problems.append(
                f"line {number}: {name} has label {label} here and {labels[name]} "
                f"on line {line_of[name]}"
            )
        else:
            labels[name], line_of[name] = label, number
    if problems:
        raise LabelError(f"label file {path}: {_listing(problems)}")
    return labels


def read_targets(path: str | os.PathLike, **options: Any) -> dict[str, int]:
    """Target classes by file name: `target_class.csv` or a dataset CSV's TargetClass column."""
    return read_labels(path, column=TARGET_CLASS, **options)


def labels_for(
    names: Iterable[str], labels: Mapping[str, int], *, source: str | os.PathLike
) -> dict[str, int]:
    """The labels of `names`, or a `LabelError` naming every image `source` has no label for."""
    names = list(names)
    missing = [name for name in names if name not in labels]
    if missing:
        raise LabelError(f"{source} has no label for {len(missing)} image(s): {_listing(missing)}")
    return {name: labels[name] for name in names}
