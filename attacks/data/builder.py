"""Building the competition's dataset: 299x299 PNG crops of the original images.

From the NIPS 2017 dataset CSV (`ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,...`,
x1..y2 a box in coordinates relative to the image, labels in slim's 1..1000) and
the original images (a local folder of `<ImageId>.<jpg|png>`, or downloaded from
their URL), each image is cropped to its box as the competition toolkit's
`download_images.py` does (pixel box `int(x1 * width), int(y1 * height),
int(x2 * width), int(y2 * height)`), resized to 299x299 with an antialiasing
filter (Lanczos, Pillow's former ANTIALIAS) and saved as `<ImageId>.png`. Crops
that exist are kept and skipped; an image that cannot be had is reported with its
reason and never stops the others. Local originals are read only if they are
regular files of a bounded size; a download follows http(s) redirects only, and
its timeout bounds it as a whole.

The paper's protocol then keeps the images every model classifies correctly
(`select_correct`, with any `classify` function) and draws a seeded random sample
(`sample`: its 5000 images, and the 500 of Sections 4.5-4.6). The final set is
written to the output directory with a `dataset.csv` of its rows (the input's
columns), the labels file the other commands read.

Imports no TensorFlow (the classifier is given by the caller).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import http.client
import io
import math
import os
import socket
import stat
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from attacks.data.dataset import read_csv_lines
from defense.common.errors import InputError, ParameterError
from defense.common.files import (
    ensure_writable_dir,
    file_kind,
    read_bounded,
    reason,
    write_atomic,
    write_text_atomic,
)
from defense.common.images import ImageError, read_image

REQUIRED_COLUMNS = ("ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass")
IMAGE_SIZE = 299
IMAGENET_CLASSES = 1000
DATASET_FILE = "dataset.csv"
ORIGINAL_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 20.0
# An ImageId's UTF-8 bytes: `<ImageId>.png` and write_atomic's `.<name>.<12 hex>.tmp`
# stay well under the 255 bytes a file name can have.
MAX_IMAGE_ID_BYTES = 200
_MAX_REPORTED = 10
T = TypeVar("T")
# (model name, uint8 images [N, H, W, 3]) -> predicted labels [N], in the CSV's label space.
Classify = Callable[[str, np.ndarray], np.ndarray]


class DatasetError(ValueError):
    """The dataset CSV is unusable; the message lists every problem (line numbers)."""


class SourceError(RuntimeError):
    """One original image cannot be had: `kind` is "missing" (no local file, downloads
    not allowed), "network" (the server could not be reached) or "other"."""

    def __init__(self, message: str, *, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DatasetRow:
    """One image of the dataset CSV, with the row as it was (`fields`)."""

    image_id: str
    url: str
    box: tuple[float, float, float, float]
    true_label: int
    target_class: int
    fields: tuple[str, ...]

    @property
    def file_name(self) -> str:
        """The crop's file name."""
        return f"{self.image_id}.png"


@dataclass(frozen=True)
class DatasetCsv:
    """The CSV's header and rows, and the file they were read from (None: made in memory),
    which the output must never replace."""

    header: tuple[str, ...]
    rows: tuple[DatasetRow, ...]
    path: Path | None = None


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_REPORTED])
    more = len(problems) - _MAX_REPORTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _file_name_problem(image_id: str) -> str | None:
    """Why `image_id` cannot name files (`<ImageId>.png` and the originals), if it cannot."""
    if not image_id:
        return "it is empty"
    if len(image_id.encode("utf-8")) > MAX_IMAGE_ID_BYTES:
        return f"longer than {MAX_IMAGE_ID_BYTES} bytes"
    if image_id.startswith("."):
        return "starts with '.'"
    separator = next((c for c in "/\\" if c in image_id), None)
    if separator is not None:
        return f"holds {separator!r}, a path separator"
    if not image_id.isprintable():
        return "holds a control character (or another unprintable one)"
    return None


def _parse_row(
    fields: list[str], index: dict[str, int], num_classes: int
) -> tuple[DatasetRow | None, list[str]]:
    """A row, or the problems that make it unusable."""
    problems = []
    image_id = fields[index["ImageId"]].strip()
    problem = _file_name_problem(image_id)
    if problem is not None:
        shown = (
            repr(image_id)
            if len(image_id) <= 40
            else f"{image_id[:40]!r}... ({len(image_id)} characters)"
        )
        problems.append(f"ImageId {shown} is not a usable file name: {problem}")
    box = []
    for name in ("x1", "y1", "x2", "y2"):
        text = fields[index[name]].strip()
        try:
            value = float(text)
        except ValueError:
            problems.append(f"{name} {text!r} is not a number")
            continue
        if not (math.isfinite(value) and 0 <= value <= 1):
            problems.append(f"{name} {text} is outside [0, 1] (the box is relative)")
        box.append(value)
    if len(box) == 4 and not (box[0] < box[2] and box[1] < box[3]):
        problems.append(
            f"the box ({', '.join(f'{v:g}' for v in box)}) is empty: need x1 < x2, y1 < y2"
        )
    labels = []
    for name in ("TrueLabel", "TargetClass"):
        text = fields[index[name]].strip()
        try:
            label = int(text)
        except ValueError:
            problems.append(f"{name} {text!r} is not an integer")
            continue
        if not 1 <= label <= num_classes:
            problems.append(f"{name} {label} is outside 1..{num_classes} (slim labels)")
        labels.append(label)
    if problems:
        return None, problems
    row = DatasetRow(
        image_id=image_id,
        url=fields[index["URL"]].strip(),
        box=(box[0], box[1], box[2], box[3]),
        true_label=labels[0],
        target_class=labels[1],
        fields=tuple(fields),
    )
    return row, []


def read_dataset_csv(path: str | os.PathLike, *, num_classes: int = IMAGENET_CLASSES) -> DatasetCsv:
    """The rows of a NIPS 2017 dataset CSV, checked: the required columns, a usable
    ImageId once each, a non-empty relative box, labels in 1..num_classes. Every bad
    line is reported in one `DatasetError`."""
    path = Path(path)
    try:
        lines = read_csv_lines(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"cannot read dataset CSV {path}: {reason(error)}") from error
    if not lines:
        raise DatasetError(f"dataset CSV {path} is empty")
    header = tuple(cell.strip() for cell in lines[0][1])
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise DatasetError(
            f"dataset CSV {path} lacks the column(s) {', '.join(missing)}; it needs "
            f"{','.join(REQUIRED_COLUMNS)} (its header: {','.join(header)})"
        )
    index = {column: header.index(column) for column in REQUIRED_COLUMNS}
    rows: list[DatasetRow] = []
    seen: dict[str, int] = {}
    problems = []
    for number, fields in lines[1:]:
        if len(fields) != len(header):
            problems.append(f"line {number}: {len(fields)} fields, the header has {len(header)}")
            continue
        row, errors = _parse_row(fields, index, num_classes)
        problems += [f"line {number}: {error}" for error in errors]
        if row is None:
            continue
        if row.image_id in seen:
            problems.append(
                f"line {number}: ImageId {row.image_id} repeats line {seen[row.image_id]}"
            )
            continue
        seen[row.image_id] = number
        rows.append(row)
    if problems:
        raise DatasetError(f"dataset CSV {path}: {_listing(problems)}")
    if not rows:
        raise DatasetError(f"dataset CSV {path} has a header but no rows")
    return DatasetCsv(header, tuple(rows), path)


def crop_box(
    width: int, height: int, box: tuple[float, float, float, float]
) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of a relative box, as the toolkit computes
    it (truncation), widened to one pixel where truncation would leave none."""
    x1, y1, x2, y2 = box
    left, top = int(x1 * width), int(y1 * height)
    right, bottom = int(x2 * width), int(y2 * height)
    left, top = min(left, width - 1), min(top, height - 1)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_and_resize(
    image: Image.Image, box: tuple[float, float, float, float], size: int = IMAGE_SIZE
) -> np.ndarray:
    """uint8 RGB [size, size, 3]: the image's relative box, resized with Lanczos."""
    rgb = image.convert("RGB")
    cropped = rgb.crop(crop_box(rgb.width, rgb.height, box))
    return np.asarray(cropped.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def find_original(images_dir: str | os.PathLike, image_id: str) -> Path | None:
    """The local original `<image_id>.jpg`, `.jpeg` or `.png` (any case), if there is one:
    a regular file first, else whatever else bears the name (a FIFO, a directory), so
    that reading it says why it is unusable instead of calling it missing."""
    folder = Path(images_dir)
    names = [image_id + s for suffix in ORIGINAL_SUFFIXES for s in (suffix, suffix.upper())]
    present = [folder / name for name in names if os.path.lexists(folder / name)]
    return next((path for path in present if os.path.isfile(path)), next(iter(present), None))


class _Watchdog:
    """The deadline of one download: when it passes, every socket the download opened is
    shut down, which ends a read that a trickling server would keep going (a socket
    timeout bounds each read only, not their sum)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    """Shut a socket down for both directions; the plain socket's shutdown, also under TLS
    (an SSLSocket's own would drop its TLS state under the reading thread)."""
    with contextlib.suppress(OSError):  # closed already
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket, once connected, its download's watchdog shuts down
    at the deadline."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchdog = watchdog

    def connect(self) -> None:
        """Connect (for HTTPS: and shake hands), then hand the socket to the watchdog."""
        super().connect()
        self.watchdog.watch(self.sock)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, http.client.HTTPSConnection):
    """An HTTPS connection that its download's watchdog shuts down at the deadline."""


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    """Opens http:// URLs on connections of one download's watchdog."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **kwargs: Any
    ) -> http.client.HTTPResponse:
        """urllib's request, on a watched connection."""
        watched = functools.partial(_WatchedHTTPConnection, watchdog=self.watchdog)
        return super().do_open(watched, req, **kwargs)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    """Opens https:// URLs on connections of one download's watchdog."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **kwargs: Any
    ) -> http.client.HTTPResponse:
        """urllib's request (with its TLS settings), on a watched connection."""
        watched = functools.partial(_WatchedHTTPSConnection, watchdog=self.watchdog)
        return super().do_open(watched, req, **kwargs)


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs only (urllib's own handler also follows ftp://),
    and words a redirect loop on one line."""

    inf_msg = "too many redirects (a loop?); the last: "

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        """The redirected request, or an `HTTPError` for a URL that is not http(s)."""
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                req.full_url,
                code,
                f"{msg}: redirect to {newurl} refused (only http and https are followed)",
                headers,
                fp,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _one_line(text: object) -> str:
    """A reason on one line (urllib's and servers' reasons may span several)."""
    return " ".join(str(text).split())


def download(url: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The bytes at an http(s) `url`, or a `SourceError` saying why not.

    `timeout` bounds the whole download, redirects included (connecting and each read
    are bounded by it too): a server that trickles its answer is cut off at the
    deadline, not only one that goes silent. Redirects are followed to http(s) only.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise SourceError(f"URL {url!r} is not http(s)")
    request = urllib.request.Request(url, headers={"User-Agent": "make_dataset"})
    late = SourceError(
        f"cannot download {url}: took longer than the timeout of {timeout:g} s", kind="network"
    )
    with _Watchdog(timeout) as watchdog:
        opener = urllib.request.build_opener(
            _WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog), _HttpRedirects()
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
                announced = response.headers.get("Content-Length", "").strip()
        except urllib.error.HTTPError as error:
            raise SourceError(
                f"cannot download {url}: HTTP {error.code} {_one_line(error.reason)}"
            ) from error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if watchdog.expired:
                raise late from error
            why = getattr(error, "reason", None) or error
            raise SourceError(f"cannot download {url}: {_one_line(why)}", kind="network") from error
    if watchdog.expired:
        raise late
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise SourceError(f"{url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MiB")
    if announced.isdigit() and len(data) < int(announced):
        raise SourceError(
            f"{url} is truncated: Content-Length announced {announced} bytes, got {len(data)}"
        )
    return data


def original_image(
    row: DatasetRow,
    *,
    images_dir: str | os.PathLike | None,
    allow_download: bool,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Image.Image, bool]:
    """The row's original image (the local file when there is one, else downloaded) and
    whether it was downloaded. A local file is read only if it is a regular file of at
    most `MAX_DOWNLOAD_BYTES` (a FIFO, a device or a huge file is a reason, not a hang)."""
    local = find_original(images_dir, row.image_id) if images_dir is not None else None
    if local is not None:
        try:
            source, data = str(local), read_bounded(local, max_bytes=MAX_DOWNLOAD_BYTES)
        except OSError as error:
            raise SourceError(f"cannot read {local}: {reason(error)}") from error
    elif allow_download:
        source, data = row.url, download(row.url, timeout)
    else:
        where = f" in {images_dir}" if images_dir is not None else ""
        raise SourceError(
            f"no original {row.image_id}.jpg/.png{where}, and downloads are not allowed",
            kind="missing",
        )
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as error:  # its message shows the BytesIO, not the source
        raise SourceError(
            f"{source} is not a readable image: not in a format Pillow reads"
        ) from error
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        problem = "is truncated" if "truncated" in str(error).lower() else "is not a readable image"
        raise SourceError(f"{source} {problem}: {_one_line(error)}") from error
    return image, local is None


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Save uint8 RGB pixels as a PNG, atomically."""
    image = Image.fromarray(pixels, "RGB")
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))


def copy_file(source: Path, target: Path) -> None:
    """Copy a file's bytes to `target`, atomically."""
    data = source.read_bytes()
    write_atomic(target, lambda handle: handle.write(data))


def _crop_exists(target: Path) -> bool:
    """Whether the crop `target` was made before (it is kept); a `SourceError` when
    something that is not a regular file bears its name."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise SourceError(f"cannot use {target}: {reason(error)}") from error
    if not stat.S_ISREG(mode):
        raise SourceError(f"{target} is {file_kind(mode)}, not a regular file")
    return True


@dataclass
class BuildResult:
    """Crops written in this run, skipped because they existed, and failures with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    downloaded: int = 0
    missing: int = 0
    network_failures: int = 0


def build_images(
    rows: Sequence[DatasetRow],
    crops_dir: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    size: int = IMAGE_SIZE,
    progress: bool = True,
) -> BuildResult:
    """Write `<ImageId>.png` crops of the rows into `crops_dir`, skipping those that exist;
    each is written atomically as it is made, so an interrupted run keeps them."""
    folder = ensure_writable_dir(crops_dir)
    result = BuildResult()
    shown = progress and sys.stderr.isatty()
    for row in tqdm(rows, unit="img", disable=not shown, desc="crops"):
        target = folder / row.file_name
        try:
            if _crop_exists(target):
                result.skipped.append(row.image_id)
                continue
            image, downloaded = original_image(
                row, images_dir=images_dir, allow_download=allow_download, timeout=timeout
            )
            write_png(target, crop_and_resize(image, row.box, size))
        except SourceError as error:
            result.failures[row.image_id] = str(error)
            result.missing += error.kind == "missing"
            result.network_failures += error.kind == "network"
            continue
        result.written.append(row.image_id)
        result.downloaded += downloaded
    return result


def select_correct(
    rows: Sequence[DatasetRow],
    crops_dir: str | os.PathLike,
    models: Sequence[str],
    classify: Classify,
    *,
    size: int = IMAGE_SIZE,
    batch_size: int = 16,
) -> tuple[list[DatasetRow], dict[str, float]]:
    """The rows whose crop every model classifies as its TrueLabel, and each model's
    accuracy on all of them (the paper keeps only images all its models get right)."""
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}", "batch_size")
    correct = np.ones(len(rows), bool)
    accuracies = {}
    for model in models:
        right = np.zeros(len(rows), bool)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            try:
                pixels = np.stack(
                    [
                        read_image(Path(crops_dir) / r.file_name, size, resize=False).pixels
                        for r in batch
                    ]
                )
            except ImageError as error:
                raise InputError(f"a crop in {crops_dir} is unusable: {error}") from error
            predicted = np.asarray(classify(model, pixels))
            labels = np.array([r.true_label for r in batch])
            right[start : start + len(batch)] = predicted == labels
        accuracies[model] = float(right.mean()) if len(rows) else 0.0
        correct &= right
    return [row for row, keep in zip(rows, correct, strict=True) if keep], accuracies


def sample(items: Sequence[T], count: int, seed: int) -> list[T]:
    """`count` of the items drawn at random with `seed` (the same draw for the same items
    in the same order), kept in their order."""
    if count < 1:
        raise ParameterError(f"count must be >= 1, got {count}", "count")
    if count > len(items):
        raise ParameterError(f"count={count} exceeds the {len(items)} items", "count")
    chosen = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
    return [items[i] for i in sorted(chosen)]


def write_dataset_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Sequence[DatasetRow]
) -> None:
    """The rows in the CSV's own format, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(row.fields for row in rows)
    write_text_atomic(path, buffer.getvalue())


@dataclass
class DatasetReport:
    """What a build did: the crops, the models' accuracies, the final rows, and PNGs in
    the output directory that are not in the final set."""

    build: BuildResult
    accuracies: dict[str, float]
    final: list[DatasetRow]
    strays: list[str]


def _same_file(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether both paths exist and are the same file or folder (links followed)."""
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def check_locations(
    dataset: DatasetCsv,
    output_dir: str | os.PathLike,
    *,
    crops_dir: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    narrowed: bool = False,
) -> Path:
    """The crops folder of a build (`crops_dir`, else `output_dir`, or `output_dir/all` when
    `narrowed` by a selection or a sample), after refusing locations where an output
    would replace an input or pass for one: `output_dir`'s dataset.csv being the dataset
    CSV itself, and `images_dir` being the output or crops folder (its PNG originals
    would pass for crops made before). Folders inside each other are fine: originals
    and crops are looked up in their own folder only."""
    output = Path(output_dir)
    crops = Path(crops_dir) if crops_dir is not None else (output / "all" if narrowed else output)
    if dataset.path is not None and _same_file(output / DATASET_FILE, dataset.path):
        raise ParameterError(
            f"output_dir {output} holds the dataset CSV {dataset.path} as its {DATASET_FILE}, "
            "which the output would replace; give another output_dir",
            "output_dir",
        )
    if images_dir is not None and _same_file(output, images_dir):
        raise ParameterError(
            f"images_dir {images_dir} is the output_dir: its originals would pass for crops "
            "made before; give another output_dir",
            "images_dir",
            "output_dir",
        )
    if images_dir is not None and _same_file(crops, images_dir):
        raise ParameterError(
            f"images_dir {images_dir} is where the crops go ({crops}): its originals would "
            "pass for crops made before; give another crops_dir",
            "images_dir",
            "crops_dir",
        )
    return crops


def make_dataset(
    dataset: DatasetCsv,
    output_dir: str | os.PathLike,
    *,
    crops_dir: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    allow_download: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    select: Sequence[str] = (),
    classify: Classify | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    size: int = IMAGE_SIZE,
    batch_size: int = 16,
    progress: bool = True,
) -> DatasetReport:
    """Crop every row into `crops_dir`, keep the images every model of `select` gets
    right (with `classify`), draw `sample_size` of them with `seed`, and write the
    final set with its `dataset.csv` to `output_dir`.

    `crops_dir` defaults to `output_dir` itself when every crop is in the final set,
    and to `output_dir/all` when selecting or sampling, so that the output holds the
    final set only. A sample larger than what is available is refused after the
    crops are made (they are kept); locations where an output would replace an input
    or pass for one are refused before anything is written (`check_locations`).
    """
    if select and classify is None:
        raise ParameterError("select needs a classify function", "select", "classify")
    narrowed = bool(select) or sample_size is not None
    crops = check_locations(
        dataset, output_dir, crops_dir=crops_dir, images_dir=images_dir, narrowed=narrowed
    )
    output = ensure_writable_dir(output_dir)
    build = build_images(
        dataset.rows,
        crops,
        images_dir=images_dir,
        allow_download=allow_download,
        timeout=timeout,
        size=size,
        progress=progress,
    )
    available = [row for row in dataset.rows if row.image_id not in build.failures]
    accuracies: dict[str, float] = {}
    if select:
        assert classify is not None, "checked above"
        available, accuracies = select_correct(
            available, crops, select, classify, size=size, batch_size=batch_size
        )
    final = available
    if sample_size is not None:
        if not 1 <= sample_size <= len(available):
            kept = " (after the selection)" if select else ""
            raise ParameterError(
                f"sample_size={sample_size} is not in 1..{len(available)}, the images "
                f"available{kept}",
                "sample_size",
            )
        final = sample(available, sample_size, seed)
    if crops.resolve() != output.resolve():
        for row in final:
            target = output / row.file_name
            if not target.exists():
                copy_file(crops / row.file_name, target)
    write_dataset_csv(output / DATASET_FILE, dataset.header, final)
    names = {row.file_name for row in final}
    strays = sorted(p.name for p in output.glob("*.png") if p.name not in names)
    return DatasetReport(build, accuracies, final, strays)
