"""Fetch, verify and install the official slim checkpoints (see checkpoints/README.md).

Nothing is installed before it is verified: the tarball is streamed into a
temporary directory inside the checkpoint directory while its SHA-256 is
computed, checked against the registry's hash (when known) and the lock file,
extracted there member by member to paths computed here (the slim tarballs hold
only regular files: every link, device or FIFO member is refused outright, as
are absolute and `..` names, so no extraction can reach outside its folder), and
its checkpoint must hold exactly the variables and shapes the Keras model
consumes. The download, each member and the whole extraction are capped in size,
the download has an overall deadline, and an interruption removes the temporary
folder. Only then are the
checkpoint files moved into place atomically (`defense.common.files`), and the lock file records
what was seen so that a later download of a changed file is refused.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from absl import logging
from tqdm import tqdm

from defense.common.errors import InputError
from defense.common.files import ensure_writable_dir, move_into_place, write_text_atomic
from defense.models import REGISTRY, ModelSpec, expected_shapes, get_spec
from defense.models.checkpoint import (
    CheckpointError,
    compare_manifest,
    model_shapes,
    open_checkpoint,
)
from defense.models.registry import CHECKPOINT_BASE_URL

LOCK_FILE = "checkpoints.lock.json"
DEFAULT_TIMEOUT = 20.0
# Every official slim tarball is under 0.5 GB and expands to under 1 GB.
MAX_DOWNLOAD_BYTES = 2 << 30
MAX_EXTRACTED_BYTES = 4 << 30
DEFAULT_DEADLINE = 3600.0
_CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched or failed verification; nothing was installed."""


class UnreachableError(DownloadError):
    """The server could not be reached or did not deliver the file (other models will fail too)."""


def select(names: Sequence[str]) -> list[ModelSpec]:
    """Registry entries for `names` (`all` means every model), in order, without repeats."""
    chosen = list(REGISTRY) if "all" in names else names
    return [get_spec(name) for name in dict.fromkeys(chosen)]


def tarball_url(spec: ModelSpec, base_url: str = CHECKPOINT_BASE_URL) -> str:
    """Where `spec`'s tarball lives under `base_url` (the official site or a mirror)."""
    return f"{base_url.rstrip('/')}/{spec.tarball}"


def ensure_checkpoint(
    spec: ModelSpec,
    checkpoint_dir: str | os.PathLike,
    *,
    base_url: str = CHECKPOINT_BASE_URL,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    force: bool = False,
    progress: bool = True,
) -> Literal["present", "downloaded"]:
    """Make sure `checkpoint_dir` holds `spec`'s verified checkpoint, downloading it if needed.

    Returns "present" when a verified copy was already there (skipped unless
    `force`), "downloaded" when it was fetched and installed. `timeout` bounds the
    connection and each read, `deadline` the whole download (seconds). Raises
    `DownloadError` (`UnreachableError` for network failures) with nothing
    installed and no temporary files left behind.
    """
    directory = Path(checkpoint_dir)
    try:
        ensure_writable_dir(directory)
    except InputError as error:
        raise DownloadError(f"checkpoint_dir {error}") from error
    if not force and _installed_and_verified(spec, directory):
        logging.info("%s: verified checkpoint already in %s; skipping", spec.name, directory)
        return "present"
    lock_path = directory / LOCK_FILE
    locked = read_lock(lock_path).get(spec.name)
    url = tarball_url(spec, base_url)
    with tempfile.TemporaryDirectory(prefix=f".download-{spec.name}-", dir=directory) as work:
        tarball = Path(work) / spec.tarball
        logging.info("%s: downloading %s", spec.name, url)
        try:
            sha256, size = _fetch(
                url, tarball, timeout=timeout, deadline=deadline, progress=progress
            )
        except _FetchError as error:
            raise UnreachableError(
                f"cannot download {spec.name} from {url}: {error}\n\n"
                f"{manual_instructions(spec, directory, url)}"
            ) from error
        _check_digest(spec, url, sha256, locked, lock_path)
        extracted = Path(work) / "extracted"
        _extract(tarball, extracted)
        files = _tarball_checkpoint(spec, extracted)
        _check_published_hash(spec, files[-1])
        _verify_manifest(spec, files[-1].parent / spec.checkpoint_file, "the downloaded checkpoint")
        for path in files:  # index (or V1 file) last: it is what makes the checkpoint visible
            move_into_place(path, directory / path.name)
    logging.info("%s: installed %s in %s", spec.name, ", ".join(p.name for p in files), directory)
    if locked is None:
        _record(lock_path, spec.name, url=url, sha256=sha256, size=size)
    return "downloaded"


def manual_instructions(spec: ModelSpec, checkpoint_dir: Path, url: str) -> str:
    """How to install `spec`'s checkpoint by hand when this machine cannot download it."""
    name = spec.checkpoint_file
    official = "" if url == spec.url else f" (or the official {spec.url})"
    return (
        f"To install it by hand, fetch {url}{official} on a machine with internet access "
        f"(e.g. `curl -fLO {url}`), copy it to this machine and extract it:\n"
        f"    tar -xzf {spec.tarball} -C {checkpoint_dir}\n"
        f"so that {checkpoint_dir} holds either the TF V2 checkpoint files\n"
        f"    {name}.index\n"
        f"    {name}.data-00000-of-00001\n"
        f"or the single TF V1 checkpoint file\n"
        f"    {name}\n"
        f"then run `download_checkpoints {spec.name}` (in a checkout: `python "
        f"scripts/download_checkpoints.py {spec.name}`) to verify it."
    )


def read_lock(path: Path) -> dict[str, dict[str, Any]]:
    """The lock file's entries by model name; an absent or empty file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise DownloadError(
            f"lock file {path} is not valid JSON ({error}); fix or delete it"
        ) from None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise DownloadError(f"lock file {path} must map model names to objects; fix or delete it")
    return entries


class _FetchError(Exception):
    """Network-level failure: unreachable host, HTTP error, stall or short read."""


def _fetch(
    url: str,
    destination: Path,
    *,
    timeout: float,
    deadline: float,
    progress: bool,
) -> tuple[str, int]:
    """Stream `url` into `destination`; one attempt, `timeout` per connect and per read,
    `deadline` seconds in all (a server trickling bytes cannot hold it forever), at most
    `MAX_DOWNLOAD_BYTES`."""
    digest, size, total, max_bytes = hashlib.sha256(), 0, None, MAX_DOWNLOAD_BYTES
    give_up = time.monotonic() + deadline
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise _FetchError(f"the server announces {total} bytes, over {max_bytes}")
            with (
                destination.open("wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=destination.name,
                    file=sys.stderr,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while chunk := response.read1(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
                    if size > max_bytes:
                        raise _FetchError(f"the download exceeds {max_bytes} bytes")
                    if time.monotonic() > give_up:
                        raise _FetchError(
                            f"the download took longer than the {deadline:g} s deadline "
                            f"({size} bytes so far)"
                        )
    except urllib.error.HTTPError as error:
        raise _FetchError(f"HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise _FetchError(_reason(error.reason, timeout)) from error
    except (OSError, http.client.HTTPException) as error:
        raise _FetchError(_reason(error, timeout)) from error
    if total is not None and size != total:
        raise _FetchError(f"the connection closed after {size} of {total} bytes")
    return digest.hexdigest(), size


def _reason(error: object, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(error) or type(error).__name__


def _check_digest(
    spec: ModelSpec, url: str, sha256: str, locked: dict[str, Any] | None, lock_path: Path
) -> None:
    """Refuse a tarball whose SHA-256 differs from the registry's or the lock's."""
    if spec.tarball_sha256 and sha256 != spec.tarball_sha256.lower():
        raise DownloadError(
            f"{spec.tarball} from {url} has SHA-256 {sha256}, but the registry expects "
            f"{spec.tarball_sha256}: it is corrupt or not the official file; nothing was installed"
        )
    if locked is not None and sha256 != locked.get("sha256"):
        raise DownloadError(
            f"{spec.tarball} from {url} has SHA-256 {sha256}, but {lock_path} recorded "
            f"{locked.get('sha256')} for {spec.name} (from {locked.get('url')} on "
            f"{locked.get('date')}); nothing was installed. If the file changed deliberately, "
            f"delete the {spec.name!r} entry from the lock file and run again."
        )


class _UnsafeMember(Exception):
    """A tarball member that extraction refuses."""


def _extract(tarball: Path, destination: Path) -> None:
    """Extract member by member, each to a path computed by `_member_path`.

    Only directories and regular files are taken; anything else is refused, so no
    link can redirect a later member. Files are created exclusively (never through
    an existing name) and their sizes add up to at most `MAX_EXTRACTED_BYTES`.
    """
    destination.mkdir()
    written, max_bytes = 0, MAX_EXTRACTED_BYTES
    try:
        with tarfile.open(tarball, "r:*") as archive:
            for member in archive:
                path = _member_path(member, destination)
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise _UnsafeMember(
                        f"member {member.name!r} is {_member_kind(member)}; the slim "
                        "tarballs hold only regular files"
                    )
                written += member.size
                if written > max_bytes:
                    raise _UnsafeMember(f"it expands to more than {max_bytes} bytes")
                path.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None, "a regular member always has data"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                try:
                    descriptor = os.open(path, flags, 0o644)
                except FileExistsError:
                    raise _UnsafeMember(f"member {member.name!r} appears twice") from None
                with open(descriptor, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK_BYTES)
    except _UnsafeMember as error:
        raise DownloadError(f"refusing unsafe tarball {tarball.name}: {error}") from error
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DownloadError(f"{tarball.name} is not a valid .tar.gz archive ({error})") from error


def _member_kind(member: tarfile.TarInfo) -> str:
    kinds = {
        member.issym(): "a symbolic link",
        member.islnk(): "a hard link",
        member.ischr() or member.isblk(): "a device",
        member.isfifo(): "a FIFO",
    }
    return kinds.get(True, "not a regular file")


def _member_path(member: tarfile.TarInfo, destination: Path) -> Path:
    """Where a member goes: under `destination`, from its name's plain components only."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        raise _UnsafeMember(f"member {member.name!r} has an absolute name")
    parts = [part for part in name.parts if part != "."]
    if ".." in parts:
        raise _UnsafeMember(f"member {member.name!r} climbs out with '..'")
    if not parts or any("\\" in part or "\0" in part for part in parts):
        raise _UnsafeMember(f"member name {member.name!r} is not a plain relative path")
    return destination.joinpath(*parts)


def _tarball_checkpoint(spec: ModelSpec, extracted: Path) -> list[Path]:
    """The checkpoint files `spec.checkpoint_file` names, found once anywhere in the tarball."""
    heads = {spec.checkpoint_file, f"{spec.checkpoint_file}.index"}
    folders = sorted({path.parent for path in extracted.rglob("*") if path.name in heads})
    if len(folders) != 1:
        contents = sorted(str(p.relative_to(extracted)) for p in extracted.rglob("*"))[:20]
        problem = "does not contain" if not folders else "holds more than one copy of"
        raise DownloadError(
            f"{spec.tarball} {problem} the checkpoint {spec.checkpoint_file} "
            f"(V2: {spec.checkpoint_file}.index + .data-*; V1: the single file); "
            f"it holds: {', '.join(contents) or 'nothing'}"
        )
    files = _checkpoint_files(folders[0], spec.checkpoint_file)
    links = [path.name for path in files if path.is_symlink() or not path.is_file()]
    if links:
        raise DownloadError(f"{spec.tarball}: {', '.join(links)} must be regular files, not links")
    return files


def _check_published_hash(spec: ModelSpec, checkpoint: Path) -> None:
    """Compare the single-file checkpoint with its published SHA-1, where one is known."""
    if not spec.checkpoint_sha1:
        return
    if checkpoint.name != spec.checkpoint_file:
        raise DownloadError(
            f"{spec.tarball}: the published SHA-1 is for the single-file checkpoint "
            f"{spec.checkpoint_file}, but the tarball holds {checkpoint.name}"
        )
    digest = hashlib.sha1(usedforsecurity=False)
    with open(checkpoint, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    if digest.hexdigest() != spec.checkpoint_sha1.lower():
        raise DownloadError(
            f"{spec.checkpoint_file} has SHA-1 {digest.hexdigest()}, but the published one is "
            f"{spec.checkpoint_sha1}: it is corrupt or not the official file; nothing was installed"
        )


def _checkpoint_files(folder: Path, checkpoint_file: str) -> list[Path]:
    """Files of checkpoint `checkpoint_file` in `folder`, the index or V1 file last.

    A V2 checkpoint is `<prefix>.index` plus every `<prefix>.data-NNNNN-of-MMMMM`
    shard; a V1 checkpoint is the single file `<prefix>`. `<prefix>.meta` comes
    along when present. Raises `DownloadError` naming what is missing.
    """
    index, single = folder / f"{checkpoint_file}.index", folder / checkpoint_file
    meta = (
        [folder / f"{checkpoint_file}.meta"]
        if (folder / f"{checkpoint_file}.meta").exists()
        else []
    )
    if not index.exists():
        if not single.is_file():
            raise DownloadError(f"neither {index.name} nor {single.name} exists")
        return [*meta, single]
    pattern = re.compile(re.escape(checkpoint_file) + r"\.data-(\d{5})-of-(\d{5})")
    shards = {
        path: (int(match[1]), int(match[2]))
        for path in folder.iterdir()
        if (match := pattern.fullmatch(path.name))
    }
    counts = {count for _, count in shards.values()}
    if len(counts) != 1 or {i for i, _ in shards.values()} != set(range(counts.pop())):
        raise DownloadError(
            f"{index.name} is there but its data shards are incomplete or mixed "
            f"({', '.join(sorted(p.name for p in shards)) or f'no {checkpoint_file}.data-* file'})"
        )
    return [*sorted(shards), *meta, index]


def _verify_manifest(spec: ModelSpec, prefix: Path, what: str) -> None:
    """Raise `DownloadError` unless `prefix` holds exactly the variables `spec`'s model has."""
    try:
        found = model_shapes(open_checkpoint(prefix))
    except CheckpointError as error:
        raise DownloadError(f"{what} is unreadable: {error}") from error
    diff = compare_manifest(expected_shapes(spec.name), found)
    if diff:
        raise DownloadError(f"{what} does not match the {spec.name} model:\n{diff.describe()}")


def _installed_and_verified(spec: ModelSpec, directory: Path) -> bool:
    """True when `directory` already holds a complete checkpoint that fits the model."""
    if not any((directory / f"{spec.checkpoint_file}{s}").exists() for s in ("", ".index")):
        return False
    try:
        _checkpoint_files(directory, spec.checkpoint_file)
        _verify_manifest(spec, directory / spec.checkpoint_file, "the installed checkpoint")
    except DownloadError as error:
        logging.warning("%s: %s; downloading it again", spec.name, error)
        return False
    return True


def _record(lock_path: Path, name: str, **entry: Any) -> None:
    """Add `name`'s entry to the lock file, written atomically."""
    entries = read_lock(lock_path)
    entries[name] = {**entry, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    write_text_atomic(lock_path, json.dumps(entries, indent=2, sort_keys=True) + "\n")
