"""The harness's own copies of what it knows by digest, and the folders it hands to
pieces built from them.

Every file whose SHA-256 the harness holds (a clean image, a batch's
`target_class.csv`, a clipped adversarial image) is kept in the store, a folder of
the intermediate directory named by digest, and is checked against its digest
each time it is read. Nothing a piece can reach is trusted: a clean image is never
re-read from the dataset folder unchecked, and a piece's input folder is rebuilt
from the store before every piece (`place_files`) and checked after it
(`changed_files`), so what one piece changes never reaches another.

With the native runtime a submission runs with the harness's privileges and can
reach the store too; what it changes there is found (the digest) and repaired from
another intact copy (the dataset file, the piece's `clipped/` file). When no intact
copy is left, `TamperedError` stops the run rather than score changed data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from attacks.competition.batches import sha256_bytes
from defense.common.errors import InputError
from defense.common.files import read_bounded, write_atomic

# The largest file the store keeps or reads: a 299x299 PNG is about 0.3 MB.
MAX_FILE_BYTES = 64 << 20


class TamperedError(InputError):
    """A file the harness knows by digest changed, and no intact copy of it is left."""


def digest_of(path: Path) -> str | None:
    """The SHA-256 of the regular file at `path`, or None where there is none to read
    (missing, not a regular file, too large, unreadable)."""
    try:
        return sha256_bytes(read_bounded(path, max_bytes=MAX_FILE_BYTES))
    except OSError:
        return None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`defense.common.files.write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(data))


@dataclass(frozen=True)
class Store:
    """Files by digest under `root`."""

    root: Path

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Keep `data`; its digest."""
        digest = sha256_bytes(data)
        if digest_of(self.path(digest)) != digest:
            self.path(digest).parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.path(digest), data)
        return digest

    def keep(self, digest: str, sources: Iterable[Path]) -> bool:
        """Make sure the store holds `digest`, from the first of `sources` that matches;
        whether it does."""
        try:
            self.read(digest, sources)
        except TamperedError:
            return False
        return True

    def read(self, digest: str, fallbacks: Iterable[Path] = (), *, what: str = "") -> bytes:
        """The bytes of `digest`: the store's copy, else the first of `fallbacks` whose
        bytes match (the store's copy is repaired from it). `TamperedError` when none
        matches; `what` names the file for that message."""
        for source in (self.path(digest), *fallbacks):
            try:
                data = read_bounded(source, max_bytes=MAX_FILE_BYTES)
            except OSError:
                continue
            if sha256_bytes(data) == digest:
                if source != self.path(digest):
                    self.put(data)
                return data
        raise TamperedError(
            f"{what or digest} (sha256 {digest[:12]}...) was changed during the run and no "
            f"intact copy is left in {self.root} or beside it: a submission tampered with "
            "the run's files (the native runtime runs submissions with your privileges; run "
            "untrusted ones with the docker runtime); start again in a new intermediate "
            "results directory"
        )


def changed_files(folder: Path, files: Mapping[str, str]) -> list[str]:
    """The names by which `folder` differs from `files` (name -> digest): changed,
    missing or added files."""
    try:
        present = set(os.listdir(folder))
    except OSError:
        return sorted(files)
    changed = sorted(present - set(files))
    changed += [name for name, digest in files.items() if digest_of(folder / name) != digest]
    return sorted(changed)


def place_files(
    folder: Path,
    files: Mapping[str, str],
    store: Store,
    fallbacks: Mapping[str, Iterable[Path]] | None = None,
) -> Path:
    """Make `folder` hold exactly `files` (name -> digest), read-only, from the store
    (or a file of `fallbacks[name]` that matches). Kept as it is when it already does,
    so a piece that changed its input never passes the change on."""
    if folder.is_dir() and not changed_files(folder, files):
        return folder
    if folder.exists() or folder.is_symlink():
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    folder.mkdir(parents=True)
    for name, digest in files.items():
        data = store.read(digest, (fallbacks or {}).get(name, ()), what=str(folder / name))
        write_bytes_atomic(folder / name, data)
        (folder / name).chmod(0o444)
    return folder
