"""The challenge runner: a directory of PNGs in, a `<filename>,<label>` CSV out.

Bad files never stop a run: every good image is classified, every failure is
reported with its reason. After each batch the CSV is rewritten atomically
with everything finished so far, so an interrupted run keeps its work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from absl import logging
from tqdm import tqdm

from defense.common.files import write_csv_atomic
from defense.common.images import list_inputs, read_batch, to_model_input


@dataclass
class RunResult:
    """Labels of the classified images and the reasons the others failed."""

    labels: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _rows(
    labels: dict[str, int], class_names: Sequence[str] | None
) -> Iterator[tuple[str, int] | tuple[str, int, str]]:
    for name in sorted(labels):
        label = labels[name]
        yield (name, label) if class_names is None else (name, label, class_names[label])


def classify_directory(
    input_dir: str | os.PathLike,
    output_file: str | os.PathLike,
    predict: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int = 16,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
) -> RunResult:
    """Classify every input file with `predict` (images in [-1, 1] -> labels) and write the CSV.

    The progress bar is drawn only on a terminal. A run that classifies nothing leaves
    an existing CSV as it was (an earlier run's labels are not replaced by nothing).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    listing = list_inputs(input_dir)
    if listing.ignored:
        logging.warning(
            "ignoring %d file(s) that are not images: %s",
            len(listing.ignored),
            ", ".join(path.name for path in listing.ignored),
        )
    paths = listing.images
    result = RunResult()
    shown = progress and sys.stderr.isatty()
    with tqdm(total=len(paths), unit="img", disable=not shown, desc="classifying") as bar:
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            names, pixels = read_batch(batch, result.failures)
            if pixels is not None:
                labels = predict(to_model_input(pixels))
                result.labels.update(zip(names, (int(label) for label in labels), strict=True))
                write_csv_atomic(output_file, _rows(result.labels, class_names))
            bar.update(len(batch))
    if not result.labels:
        if Path(output_file).exists():
            logging.warning("no image could be classified; %s is left as it was", output_file)
        else:
            write_csv_atomic(output_file, [])
    return result
