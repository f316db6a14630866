"""Where a run keeps its work: the intermediate results directory.

    store/                                every file the harness knows by digest (`store`)
    .key                                  the secret that seals the records (`pieces`)
    .running/<host>.<token>               the pieces in flight (`containment`)
    attacks_output/<attack>/batch_003/    one attack piece: input/ (batch 3's clean images,
                                          and target_class.csv for a targeted attack; there
                                          while it runs), output/ (what the attack wrote),
                                          clipped/ (the images defenses see), logs, piece.json
    targeted_attacks_output/<attack>/batch_003/
    all_adv_examples/batch_003/part_00/   the batch's clipped images of every attack, under
                                          anonymous names (mapping.json beside says whose)
    defenses_output/<defense>/batch_003_part_00/   input/ (the part's images, while it runs),
                                          output/result.csv, logs, piece.json

A piece's `piece.json` is written last, once its outcome and outputs were read: a
later run reuses it when its key and seal match, and runs the piece again otherwise.
It also keeps where the piece ran (worker, node, seconds, attempts). Input folders
are built from the store before every piece and removed after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from attacks.competition.batches import Batch
from attacks.competition.store import Store
from defense.common.errors import InputError
from defense.common.files import ensure_writable_dir, read_bounded, reason

LOCK_FILE = ".run_competition.lock"
KEY_FILE = ".key"
SECRET_BYTES = 32


@dataclass(frozen=True)
class Layout:
    """The paths of the intermediate results directory `root`."""

    root: Path

    def attack_piece(self, name: str, batch: Batch, *, targeted: bool) -> Path:
        kind = "targeted_attacks_output" if targeted else "attacks_output"
        return self.root / kind / name / batch.name

    def pool(self, batch: Batch) -> Path:
        return self.root / "all_adv_examples" / batch.name

    def defense_piece(self, name: str, batch: Batch, part: int) -> Path:
        return self.root / "defenses_output" / name / f"{batch.name}_part_{part:02d}"

    @property
    def store(self) -> Store:
        return Store(self.root / "store")

    def secret(self) -> bytes:
        """The run directory's secret for sealing records, made on first use (mode 0600)."""
        path = self.root / KEY_FILE
        try:
            secret = read_bounded(path, max_bytes=64)
        except FileNotFoundError:
            secret = b""
        except OSError as error:
            raise InputError(f"{path} cannot be read: {reason(error)}; remove it") from error
        if len(secret) != SECRET_BYTES:
            secret = secrets.token_bytes(SECRET_BYTES)
            path.unlink(missing_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as handle:
                handle.write(secret)
        return secret

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory for this run; another run on it at the same time is refused."""
        ensure_writable_dir(self.root)
        descriptor = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o666)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    f"{self.root} is in use by another run_competition; wait for it or give "
                    "another intermediate results directory"
                ) from None
            yield
        finally:
            os.close(descriptor)


def fresh_dir(path: Path, *, open_to_all: bool = False) -> Path:
    """An empty directory at `path` (what was there is removed). `open_to_all`: writable
    by every user, for a container that runs as another user (as the cloud workers do)."""
    remove(path)
    path.mkdir(parents=True)
    if open_to_all:
        path.chmod(0o777)
    return path


def remove(path: Path) -> None:
    """Remove what is at `path`: a folder with its content, anything else by its entry (a
    link a piece put there is never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
