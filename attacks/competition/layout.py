"""Where a run keeps its work: the intermediate results directory.

    dataset/batch_003/                    clean images of batch 3: the input of its attack pieces
    dataset/batch_003_targeted/           the same and target_class.csv, for targeted attacks
    attacks_output/<attack>/batch_003/    one attack piece: output/ (what the attack wrote),
                                          clipped/ (the images defenses see), logs, piece.json
    targeted_attacks_output/<attack>/batch_003/
    all_adv_examples/batch_003/part_00/   the batch's clipped images of every attack, under
                                          anonymous names (mapping.json beside says whose)
    defenses_output/<defense>/batch_003_part_00/   output/result.csv, logs, piece.json

A piece's `piece.json` is written last, once its outcome and outputs were read: a
later run reuses it when its key matches, and runs the piece again otherwise.
Input folders are rebuilt whenever their files differ from what they should hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from attacks.competition.batches import Batch, sha256_bytes, sha256_file
from defense.common.errors import InputError
from defense.common.files import ensure_writable_dir, write_atomic

LOCK_FILE = ".run_competition.lock"


@dataclass(frozen=True)
class Layout:
    """The paths of the intermediate results directory `root`."""

    root: Path

    def dataset_input(self, batch: Batch, *, targeted: bool) -> Path:
        return self.root / "dataset" / f"{batch.name}{'_targeted' if targeted else ''}"

    def attack_piece(self, name: str, batch: Batch, *, targeted: bool) -> Path:
        kind = "targeted_attacks_output" if targeted else "attacks_output"
        return self.root / kind / name / batch.name

    def pool(self, batch: Batch) -> Path:
        return self.root / "all_adv_examples" / batch.name

    def defense_piece(self, name: str, batch: Batch, part: int) -> Path:
        return self.root / "defenses_output" / name / f"{batch.name}_part_{part:02d}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory for this run; another run on it at the same time is refused."""
        ensure_writable_dir(self.root)
        descriptor = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
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
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    if open_to_all:
        path.chmod(0o777)
    return path


def place_files(folder: Path, files: Mapping[str, tuple[str, Path | bytes]]) -> Path:
    """Make `folder` hold exactly `files` (name -> (sha256, source file or bytes)), read-only.

    Kept as it is when it already does, else rebuilt; a submission that changed its
    input therefore cannot pass the change on to the next piece.
    """
    if folder.is_dir():
        present = sorted(os.listdir(folder))
        if present == sorted(files) and all(
            sha256_file(folder / name) == digest for name, (digest, _) in files.items()
        ):
            return folder
    fresh_dir(folder)
    for name, (digest, source) in files.items():
        data = source if isinstance(source, bytes) else source.read_bytes()
        if sha256_bytes(data) != digest:
            raise InputError(f"the source of {folder / name} changed during the run; run again")
        write_bytes_atomic(folder / name, data)
        (folder / name).chmod(0o444)
    return folder


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`defense.common.files.write_atomic`)."""
    write_atomic(path, lambda handle: handle.write(data))
