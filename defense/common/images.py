"""Competition input: reading a directory of PNGs robustly.

Inputs are the `*.png` files of a directory (and files of other image formats,
which are reported as not PNG). Each is converted to 8-bit RGB (grayscale,
palette, alpha and 16-bit images are accepted) and resized to 299x299 when it
has another size. A file that cannot
be used raises `ImageError` with the reason, so a run can skip it and go on.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from defense.common.errors import InputError
from defense.common.files import file_kind

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
    """A `*.png` name, or image data of another format (so that it is reported, not skipped).

    Only regular files are sniffed: opening a FIFO or a device could block or never end.
    """
    if path.suffix.lower() == ".png":
        return True
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return True
    return _format_of(header) is not None


def list_inputs(input_dir: str | os.PathLike) -> InputListing:
    """Sort the entries of `input_dir` into images and ignored entries.

    Images are the non-hidden `*.png` entries that are not directories (a device or
    FIFO among them then fails as "not a regular file") and files holding another
    image format (which fail as "not a PNG"); everything else, such as a licence, a
    CSV, a hidden file or a folder, is ignored, as the competition runtime ignored it,
    and listed so that the caller can say so.
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
    files = [path for path in entries if not path.name.startswith(".") and not path.is_dir()]
    images = [path for path in files if _is_image_candidate(path)]
    chosen = set(images)
    listing = InputListing(images=images, ignored=[p for p in entries if p not in chosen])
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


def check_size(width: int, height: int, size: int) -> None:
    """Refuse an image that is not size x size, where it must not be resized: an attack's
    budget is per pixel, so attacks and their adversarial sets never resize."""
    if (width, height) != (size, size):
        raise ImageError(f"is {width}x{height}, not {size}x{size}")


def read_image(
    path: str | os.PathLike, size: int = IMAGE_SIZE, *, resize: bool = True
) -> LoadedImage:
    """Read one PNG as uint8 RGB of size x size, or raise `ImageError` saying why not.

    An image of another size is resized, or with `resize=False` refused (`check_size`).
    """
    path = Path(path)
    limit = f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the check below refuses it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(f"not a regular file ({file_kind(info.st_mode)})")
            if info.st_size > MAX_FILE_BYTES:
                raise ImageError(limit)
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from error
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(limit)
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
            if not resize:
                check_size(width, height, size)
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
            loaded = read_image(path, size, resize=resize)
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


def from_model_input(images: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> float32 pixels in [0, 255] (not rounded), `to_model_input`'s inverse."""
    return np.clip((images.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
