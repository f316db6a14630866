"""Reading what users and submissions hand in without trusting it, writing outputs
atomically, and refusing to write where it would destroy something.

Every file a user or a submission gives is read through `read_bounded`: opened
without blocking (a FIFO never stalls a run), refused unless it is a regular file,
and read only up to a size cap (a link to /dev/zero never fills the memory). CSV and
JSON read from such files go through `csv_rows` and `parse_json`: an oversized CSV
field costs its row, a deep nesting or a huge integer is one `ValueError`.

Every output of the project (label CSVs, adversarial PNGs and arrays, stats and
settings, checkpoint files, the lock file) goes through here: it is written to a
temporary file in the target's directory and renamed over the target, so a reader
never sees half a file and an interrupted run leaves either the old file or the new.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from defense.common.errors import InputError

MAX_TEXT_BYTES = 64 << 20


class RefusedFile(OSError):
    """A file that is not read: not a regular file, or over its size cap. An `OSError`,
    so that every caller's handling of unreadable files covers it; `strerror` says why."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: 'a directory', 'a FIFO', ..."""
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def read_bounded(path: str | os.PathLike, *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them.

    Opened with O_NONBLOCK, so a FIFO is refused rather than waited on; a device, a
    directory or a socket is refused by its kind, a larger file by its size. Raises
    `RefusedFile` for these and `OSError` for files that cannot be opened at all.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = file_kind(info.st_mode)
            raise RefusedFile(errno.EINVAL, f"{kind}, not a regular file", str(path))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RefusedFile(errno.EFBIG, f"larger than {_size(max_bytes)}", str(path))
    return data


def read_text_bounded(
    path: str | os.PathLike, *, max_bytes: int = MAX_TEXT_BYTES, encoding: str = "utf-8"
) -> str:
    """`read_bounded` decoded as `encoding` (raises `UnicodeDecodeError` on bad bytes)."""
    return read_bounded(path, max_bytes=max_bytes).decode(encoding)


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count} bytes"


def reason(error: BaseException) -> str:
    """An error as the one short reason a message shows (an OSError's strerror, if any)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def csv_rows(text: str) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """The rows of CSV `text` with their line numbers (from 1, the row's last line); a
    row the csv module cannot take (a field over its 128 KiB limit, a NUL byte) comes
    as its `csv.Error`, and the rows after it still come."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield reader.line_num, error
            continue
        yield reader.line_num, row


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, with every way hostile text can make it fail a `ValueError`:
    nesting too deep for the decoder, an integer over Python's digit limit."""
    try:
        return json.loads(text)
    except RecursionError as error:
        raise ValueError("JSON nested too deep") from error


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
            f"output path {path} is {file_kind(info.st_mode)}, not a regular file; "
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


def move_into_place(source: Path, path: str | os.PathLike) -> None:
    """Rename the finished file `source` (in the same file system) over `path`, durably;
    what replacing would destroy is refused, as by `write_atomic`."""
    _replaceable(Path(path))
    target = _output_target(Path(path))
    os.replace(source, target)
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
