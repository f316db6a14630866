"""The tables' image sets: a dataset directory's PNGs with their labels, the seeded
subset of Sections 4.5-4.6, and a digest that names exactly those images.

The digest covers every image's name, label and file content, so results made on
other images (or regenerated ones) are never taken for this set's. Every image is
decoded when the set is read, before any cell runs: like the paper's, the images must
be PNGs of the models' input size (another size is refused, not silently resized,
which would distort it and change what a pixel budget means); a grayscale or palette
image is converted to RGB with a warning. Images are then read at the size a scenario
needs (the one-pixel diagnostics of Section 4.6 work on 330x330 from the 299x299
dataset: resized with Lanczos, as `defense.common.images` does).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from absl import logging

from attacks.data.builder import sample
from attacks.data.dataset import labels_for, read_labels
from defense.common.errors import InputError
from defense.common.files import read_bounded, reason
from defense.common.images import MAX_FILE_BYTES, ImageError, list_inputs, read_image

_MAX_REPORTED = 5


@dataclass(frozen=True)
class ImageSet:
    """Images (paths, in name order) with their labels and file digests."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    files: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        """The file names."""
        return [path.name for path in self.paths]

    @property
    def digest(self) -> str:
        """SHA-256 over every (name, label, file digest): what a cell was computed on."""
        text = "".join(
            f"{path.name}\t{label}\t{file}\n"
            for path, label, file in zip(self.paths, self.labels, self.files, strict=True)
        )
        return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def take(self, indices: list[int]) -> ImageSet:
        """The images at `indices`."""
        return ImageSet(
            tuple(self.paths[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            tuple(self.files[i] for i in indices),
        )

    def limited(self, limit: int | None) -> ImageSet:
        """The first `limit` images (all when None)."""
        return self if limit is None else self.take(list(range(min(limit, len(self)))))

    def subset(self, size: int, seed: int) -> ImageSet:
        """`size` images drawn with `seed` (`dataset_builder.sample`); all when fewer."""
        if size >= len(self):
            return self
        return self.take(sample(list(range(len(self))), size, seed))

    def unseen(self) -> list[str]:
        """The images this process cannot read as they were read at the start (missing, or
        another content): run on every node, what a node does not share of the dataset."""
        found = []
        for path, digest in zip(self.paths, self.files, strict=True):
            try:
                data = read_bounded(path, max_bytes=MAX_FILE_BYTES)
            except OSError as error:
                found.append(f"{path.name} ({reason(error)})")
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                found.append(f"{path.name} (other content)")
        return found

    def pixels(self, start: int, stop: int, size: int) -> np.ndarray:
        """uint8 [n, size, size, 3] of images start..stop-1, resized to size if needed."""
        try:
            return np.stack([read_image(path, size).pixels for path in self.paths[start:stop]])
        except ImageError as error:
            raise InputError(f"an image of the dataset is unusable: {error}") from error


def _checked(path: Path, size: int) -> tuple[str, list[str]]:
    """The SHA-256 of a dataset image that decodes as a size x size PNG, and its
    conversions to RGB; raises `ImageError` saying why it does not."""
    conversions = read_image(path, size, resize=False).conversions
    try:
        data = read_bounded(path, max_bytes=MAX_FILE_BYTES)
    except OSError as error:
        raise ImageError(f"cannot read file: {reason(error)}") from error
    return hashlib.sha256(data).hexdigest(), conversions


def read_image_set(
    dataset_dir: str | os.PathLike,
    labels_file: str | os.PathLike,
    *,
    first_label: int,
    num_classes: int,
    size: int,
) -> ImageSet:
    """The PNGs of `dataset_dir`, each with its label from `labels_file` (a dataset CSV's
    TrueLabel or `<filename>,<label>` lines) in first_label..first_label+num_classes-1.

    Every image is decoded now, so that a damaged one, one of another size than
    size x size, a FIFO or a device is refused (naming it) before any cell runs."""
    listing = list_inputs(dataset_dir)
    names = [path.name for path in listing.images]
    labels = labels_for(
        names,
        read_labels(labels_file, num_classes=num_classes, first_label=first_label),
        source=labels_file,
    )
    files, problems, converted = [], [], []
    for path in listing.images:
        try:
            digest, conversions = _checked(path, size)
        except ImageError as error:
            problems.append(f"{path.name}: {error}")
            continue
        files.append(digest)
        converted += [f"{path.name} ({note})" for note in conversions]
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = len(problems) - _MAX_REPORTED
        raise InputError(
            f"{len(problems)} image(s) of {dataset_dir} are unusable (the images must be "
            f"{size}x{size} PNGs, the models' input size):\n  {shown}"
            + (f"\n  and {more} more" if more > 0 else "")
        )
    if converted:
        rest = ", ..." if len(converted) > _MAX_REPORTED else ""
        logging.warning(
            "%d image(s) of %s are not RGB and were converted to RGB: %s%s",
            len(converted),
            dataset_dir,
            ", ".join(converted[:_MAX_REPORTED]),
            rest,
        )
    return ImageSet(tuple(listing.images), tuple(labels[name] for name in names), tuple(files))
