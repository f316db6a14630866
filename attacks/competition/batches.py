"""The dataset and its batches: the PNGs of the dataset folder with the labels of the
NIPS 2017 dataset CSV, cut into batches that each have one epsilon.

The dev toolkit gives every image the same epsilon; the cloud evaluation cuts the
dataset (sorted by image id) into batches of 100 and gives batch k the epsilon
`EPSILON_CYCLE[k % 4]`. An epsilon schedule here is a tuple: batch k gets
`schedule[k % len(schedule)]`, so one fixed epsilon is a schedule of one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from attacks.data.dataset import TARGET_CLASS, LabelError, labels_for, parse_labels, read_csv_lines
from defense.common.errors import ParameterError, listing
from defense.common.files import read_bounded, reason

EPSILON_CYCLE = (4, 8, 12, 16)
CYCLE = "cycle"
BATCH_SIZE = 100
DATASET_COLUMNS = ("ImageId", "TrueLabel", "TargetClass")
NIPS17_HEADER = (
    "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,"
    "AuthorProfileURL"
)
TARGET_CLASS_FILE = "target_class.csv"
MAX_IMAGE_BYTES = 64 << 20


def parse_epsilon(value: str) -> tuple[int, ...]:
    """The epsilon schedule of `value`: an integer 0..255 for every batch, or `cycle`."""
    if value.strip() == CYCLE:
        return EPSILON_CYCLE
    try:
        epsilon = int(value)
    except ValueError:
        epsilon = -1
    if not 0 <= epsilon <= 255:
        raise ParameterError(
            f"epsilon must be an integer in 0..255 or {CYCLE!r} (4, 8, 12, 16 over the "
            f"batches), got {value!r}",
            "epsilon",
        )
    return (epsilon,)


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of `data`: how inputs are recognised when a run is resumed."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class DatasetImage:
    """One clean image: its id (the file is `<id>.png`), labels and file digest."""

    image_id: str
    path: Path
    true_label: int
    target_class: int
    digest: str

    @property
    def file_name(self) -> str:
        return f"{self.image_id}.png"


@dataclass(frozen=True)
class Batch:
    """Batch `index` of the dataset, attacked with one epsilon."""

    index: int
    epsilon: int
    images: tuple[DatasetImage, ...]

    @property
    def name(self) -> str:
        return f"batch_{self.index:03d}"

    def target_class_csv(self) -> bytes:
        """The batch's `target_class.csv` (`<id>.png,<class>`, no header), as the toolkit writes."""
        rows = (f"{image.file_name},{image.target_class}\n" for image in self.images)
        return "".join(rows).encode()

    def digest(self, *, targeted: bool) -> str:
        """What an attack piece's input is: the images' files and, if targeted, the targets."""
        lines = [f"{image.file_name}\t{image.digest}\n" for image in self.images]
        if targeted:
            lines.append(f"{TARGET_CLASS_FILE}\t{sha256_bytes(self.target_class_csv())}\n")
        return sha256_bytes("".join(lines).encode())


@dataclass(frozen=True)
class Dataset:
    """The images to attack, by id, and the ids of the metadata that have no file."""

    images: tuple[DatasetImage, ...]
    ids_without_files: tuple[str, ...]

    def batches(self, batch_size: int, epsilons: tuple[int, ...]) -> list[Batch]:
        """Consecutive batches of `batch_size` images; batch k gets `epsilons[k % len]`."""
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}", "batch_size")
        return [
            Batch(k, epsilons[k % len(epsilons)], self.images[start : start + batch_size])
            for k, start in enumerate(range(0, len(self.images), batch_size))
        ]


def _read_metadata(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Labels and target classes by file name from the dataset CSV at `path`; a file
    without its ImageId, TrueLabel and TargetClass columns is refused."""
    try:
        lines = read_csv_lines(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ParameterError(
            f"dataset_metadata {path} cannot be read: {reason(error)}", "dataset_metadata"
        ) from error
    header = [cell.strip() for cell in lines[0][1]] if lines else []
    missing = [column for column in DATASET_COLUMNS if column not in header]
    if missing:
        raise ParameterError(
            f"dataset_metadata {path} lacks the column(s) {', '.join(missing)}; expected the "
            f"NIPS 2017 dataset CSV ({NIPS17_HEADER}), got the header {','.join(header)!r}",
            "dataset_metadata",
        )
    try:
        return parse_labels(lines, path), parse_labels(lines, path, column=TARGET_CLASS)
    except LabelError as error:
        raise ParameterError(f"dataset_metadata: {error}", "dataset_metadata") from error


def _readable(data: bytes) -> str | None:
    """Why PNG bytes cannot be decoded as an image, or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as error:
        return str(error) or type(error).__name__
    return None


def read_dataset(dataset_dir: str | os.PathLike, dataset_metadata: str | os.PathLike) -> Dataset:
    """The PNGs of `dataset_dir` with their labels from the dataset CSV `dataset_metadata`.

    Every PNG needs a row with labels in 1..1000; rows without a PNG are left out and
    listed in `ids_without_files`. Each PNG is read once here, as a regular file of
    at most `MAX_IMAGE_BYTES`, and known by its digest from then on. An unusable
    folder, file, row or image raises a `ParameterError` naming the argument and
    everything wrong with it.
    """
    folder, metadata = Path(dataset_dir), Path(dataset_metadata)
    if not folder.is_dir():
        raise ParameterError(f"dataset_dir {folder} is not a directory", "dataset_dir")
    labels, targets = _read_metadata(metadata)
    try:
        pngs = sorted(folder / name for name in os.listdir(folder) if name.endswith(".png"))
    except OSError as error:
        raise ParameterError(
            f"dataset_dir {folder} cannot be listed: {reason(error)}", "dataset_dir"
        ) from error
    try:
        labels_for([path.name for path in pngs], labels, source=metadata)
    except LabelError as error:
        raise ParameterError(f"dataset_metadata: {error}", "dataset_metadata") from error
    if not pngs:
        raise ParameterError(
            f"dataset_dir {folder} holds no PNG (<ImageId>.png) to attack", "dataset_dir"
        )
    images, unreadable = [], []
    for path in pngs:
        try:
            data = read_bounded(path, max_bytes=MAX_IMAGE_BYTES)
        except OSError as error:
            unreadable.append(f"{path.name} ({reason(error)})")
            continue
        problem = _readable(data)
        if problem:
            unreadable.append(f"{path.name} ({problem})")
        image_id = path.name.removesuffix(".png")
        images.append(
            DatasetImage(image_id, path, labels[path.name], targets[path.name], sha256_bytes(data))
        )
    if unreadable:
        raise ParameterError(
            f"dataset_dir {folder}: {len(unreadable)} PNG(s) cannot be read: {listing(unreadable)}",
            "dataset_dir",
        )
    names = {path.name for path in pngs}
    without = sorted(name.removesuffix(".png") for name in labels if name not in names)
    return Dataset(tuple(images), tuple(without))
