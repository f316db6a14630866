"""Competition I/O: reading input PNGs robustly and writing label CSVs atomically.

Inputs are the `*.png` files of a directory (and files of other image formats,
which are reported as not PNG). Each is converted to 8-bit RGB (grayscale,
palette, alpha and 16-bit images are accepted) and resized to 299x299 when it
has another size. A file that cannot
be used raises `ImageError` with the reason, so a run can skip it and go on.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
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


def read_image(path: str | os.PathLike, size: int = IMAGE_SIZE) -> LoadedImage:
    """Read one PNG as uint8 RGB of size x size, or raise `ImageError` saying why not."""
    path = Path(path)
    limit = f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the check below refuses it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(f"not a regular file ({_file_kind(info.st_mode)})")
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


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _output_target(path: Path) -> Path:
    """The file an output path names: a symlink's target (the link is kept), else the path."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _replaceable(path: Path) -> os.stat_result | None:
    """The status of the file at `path` (links followed) that an atomic write may replace
    (None: no file). `path` is stat'ed as given, not through its `realpath`: /dev/stdout
    and other /proc links resolve to names that mean nothing once written to.

    Refuses what replacing would destroy: anything but a regular file (a device such
    as /dev/null, a FIFO, a directory), a file with other hard links (the rename
    would detach them) and a read-only file.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError(f"output path {path}: {error.strerror or error}") from error
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"output path {path} is a directory; give a file name")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"output path {path} is {_file_kind(info.st_mode)}, not a regular file; "
            "give the path of a file"
        )
    if info.st_nlink > 1:
        raise InputError(
            f"output file {path} has {info.st_nlink} hard links, which replacing it would "
            "detach; remove the other links or give another path"
        )
    if not info.st_mode & 0o222:
        raise InputError(f"output file {path} is read-only; make it writable or give another path")
    return info


def check_output_file(
    output_file: str | os.PathLike, *, inputs: Sequence[os.PathLike] = ()
) -> Path:
    """Fail early when the output file cannot be written where asked, or when writing it
    would destroy something: one of `inputs`, a device, a linked or read-only file."""
    path = Path(output_file)
    _replaceable(path)
    target = _output_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist")
    if target.exists() and any(os.path.samefile(target, item) for item in inputs):
        raise InputError(f"output file {path} is one of the input images; give another path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory {parent} is not writable")
    return path


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check, by creating a file there, that it takes files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{folder} cannot be written: {error.strerror or error}") from error
    return folder


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through `write(handle)` into a temporary file, then rename it over `path`.

    A reader never sees a half-written file, and after the call the file and its
    directory entry are on disk. A symlinked path keeps its link (the target is
    replaced); an existing file keeps its mode, a new one gets the mode the umask
    allows. What replacing would destroy is refused (see `check_output_file`).
    """
    existing = _replaceable(Path(path))
    target = _output_target(Path(path))
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # The kernel applies the umask to 0o666, so no process-wide umask change is needed.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "wb") as handle:
            if existing is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(existing.st_mode))
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text atomically, as UTF-8; file names that are not UTF-8 keep their bytes."""
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8", "surrogateescape")))


def _csv_field(value: object) -> str:
    """One CSV field, quoted when it holds a comma, a quote, or a line break (\\r or \\n)."""
    text = str(value)
    if any(special in text for special in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv_atomic(path: str | os.PathLike, rows: Iterable[Sequence[object]]) -> None:
    """Write CSV rows (no header, `\\n` line ends) atomically."""
    write_text_atomic(path, "".join(",".join(map(_csv_field, row)) + "\n" for row in rows))
