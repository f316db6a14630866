"""Competition I/O: reading input PNGs robustly and writing label CSVs atomically.

Inputs are the `*.png` files of a directory (and files of other image formats,
which are reported as not PNG). Each is converted to 8-bit RGB (grayscale,
palette, alpha and 16-bit images are accepted) and resized to 299x299 when it
has another size. A file that cannot
be used raises `ImageError` with the reason, so a run can skip it and go on.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from absl import logging
from PIL import Image

IMAGE_SIZE = 299
MAX_PIXELS = 4096 * 4096
MAX_FILE_BYTES = 64 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_FORMATS = {
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"RIFF": "RIFF/WebP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


class ImageError(ValueError):
    """One input file cannot be classified; the message is the reason."""


class InputError(ValueError):
    """The input or output location as a whole is unusable."""


@dataclass
class LoadedImage:
    """An image ready for the model, with notes on what was done to it."""

    pixels: np.ndarray  # uint8 [IMAGE_SIZE, IMAGE_SIZE, 3]
    conversions: list[str] = field(default_factory=list)
    resized_from: tuple[int, int] | None = None


@dataclass
class InputListing:
    """The files of an input directory: images to classify and other files left alone."""

    images: list[Path]
    ignored: list[Path]


def _is_image_candidate(path: Path) -> bool:
    """A `*.png` name, or image data of another format (so that it is reported, not skipped)."""
    if path.suffix.lower() == ".png":
        return True
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return True
    return _format_of(header) is not None


def list_inputs(input_dir: str | os.PathLike) -> InputListing:
    """Sort the regular, non-hidden files of `input_dir` into images and ignored files.

    Images are `*.png` files and files holding another image format (which then
    fail as "not a PNG"); anything else, such as a licence or a CSV, is ignored,
    as the competition runtime ignored it.
    """
    directory = Path(input_dir)
    if not directory.exists():
        raise InputError(f"input directory {directory} does not exist")
    if not directory.is_dir():
        raise InputError(f"input path {directory} is not a directory")
    try:
        entries = sorted(directory.iterdir(), key=lambda path: path.name)
    except OSError as error:
        raise InputError(f"cannot list input directory {directory}: {error.strerror}") from error
    files = [
        path
        for path in entries
        if not path.name.startswith(".")
        and not path.is_dir()
        and (path.is_file() or path.is_symlink())
    ]
    listing = InputListing(
        images=[path for path in files if _is_image_candidate(path)],
        ignored=[path for path in files if not _is_image_candidate(path)],
    )
    if not listing.images:
        ignored = ", ".join(path.name for path in listing.ignored)
        raise InputError(
            f"input directory {directory} holds no PNG files"
            + (f" (ignored: {ignored})" if ignored else "")
        )
    return listing


def _format_of(header: bytes) -> str | None:
    return next((name for magic, name in _OTHER_FORMATS.items() if header.startswith(magic)), None)


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """8-bit RGB pixels; 16-bit samples are scaled, alpha is dropped."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8), []
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), [f"converted {mode} (16-bit) to RGB"]
    note = f"converted {mode} to RGB" + (
        " (alpha dropped)" if "A" in mode or "transparency" in image.info else ""
    )
    return np.asarray(image.convert("RGB"), dtype=np.uint8), [note]


def read_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> LoadedImage:
    """Read one PNG as uint8 RGB of size x size, or raise `ImageError` saying why not."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from error
    if not data:
        raise ImageError("empty file (0 bytes)")
    if not data.startswith(PNG_SIGNATURE):
        found = _format_of(data)
        raise ImageError(f"not a PNG file{f' ({found} data)' if found else ''}")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image is {width}x{height} pixels, more than the {MAX_PIXELS}-pixel limit "
                    "(decompression-bomb guard)"
                )
            image.load()
            pixels, conversions = _to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as error:
        raise ImageError(f"corrupt PNG: {error}") from error
    loaded = LoadedImage(pixels, conversions)
    if (width, height) != (size, size):
        resized = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS)
        loaded.pixels = np.asarray(resized, dtype=np.uint8)
        loaded.resized_from = (width, height)
    return loaded


def read_batch(
    paths: Sequence[Path],
    failures: dict[str, str],
    *,
    size: int = IMAGE_SIZE,
    resize: bool = True,
) -> tuple[list[str], np.ndarray | None]:
    """The usable images of a batch as uint8 pixels [N, size, size, 3], with their names.

    An unusable image is logged and recorded in `failures` (name -> reason), so one
    bad file never stops a run. Images of another size are resized with a warning,
    or, with `resize=False`, refused (attacks never resize: the budget is per pixel).
    """
    names, pixels = [], []
    for path in paths:
        try:
            loaded = read_image(path, size)
            if loaded.resized_from and not resize:
                width, height = loaded.resized_from
                raise ImageError(f"is {width}x{height}, not {size}x{size}")
        except ImageError as error:
            failures[path.name] = str(error)
            logging.error("%s: %s", path.name, error)
            continue
        for note in loaded.conversions:
            logging.info("%s: %s", path.name, note)
        if loaded.resized_from:
            logging.warning(
                "%s: is %dx%d, resized to %dx%d", path.name, *loaded.resized_from, size, size
            )
        names.append(path.name)
        pixels.append(loaded.pixels)
    return names, (np.stack(pixels) if pixels else None)


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], as the slim Inception preprocessing does."""
    return pixels.astype(np.float32) / 255.0 * 2.0 - 1.0


def check_output_file(output_file: str | os.PathLike) -> Path:
    """Fail early when the output file cannot be written where asked."""
    path = Path(output_file)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"output path {path} is a directory; give a file name")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory {parent} is not writable")
    return path


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write(handle)` into a temporary file, then rename it over `path`.

    A reader never sees a half-written file; the file gets the mode the umask allows.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with open(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Sequence[object]]) -> None:
    """Write CSV rows (no header, `\\n` line ends) atomically."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    write_text_atomic(path, buffer.getvalue())
