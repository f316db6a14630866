"""Test-side helpers for the toy submissions: a toy dataset whose labels the toys decode,
competition folders linking the toys, and running the run_competition script.

Image `imgK` (K = 0..7) is 4x4 and uniform: red 32 * (label - 1) + 16 (the centre of
its label's bin for the toy defenses), green 64 for even K and 192 for odd K (so
`half` classifies the even ones), blue 128. Labels are K + 1; targets below.
"""

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

TOYS = Path(__file__).resolve().parent
REPO = TOYS.parents[2]
SCRIPT = REPO / "scripts" / "run_competition.py"
HEADER = [
    "ImageId",
    "URL",
    "x1",
    "y1",
    "x2",
    "y2",
    "TrueLabel",
    "TargetClass",
    "OriginalLandingURL",
    "License",
    "Author",
    "AuthorProfileURL",
]
TARGETS = [2, 3, 1, 5, 6, 4, 8, 7]
SIDE = 4


def toy_pixels(k: int) -> np.ndarray:
    values = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
    values[...] = (32 * k + 16, 64 if k % 2 == 0 else 192, 128)
    return values


def write_metadata(path: Path, rows) -> Path:
    """A NIPS 2017 dataset CSV of (image id, true label, target class) rows."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for image_id, label, target in rows:
            writer.writerow([image_id, "http://x", 0, 0, 4, 4, label, target, "", "", "", ""])
    return path


def make_dataset(root: Path, count: int = 8) -> tuple[Path, Path]:
    """(dataset_dir, dataset_metadata) with img0..img<count - 1>."""
    folder = root / "dataset"
    folder.mkdir(parents=True)
    for k in range(count):
        Image.fromarray(toy_pixels(k)).save(folder / f"img{k}.png")
    rows = [(f"img{k}", k + 1, TARGETS[k]) for k in range(count)]
    return folder, write_metadata(root / "dataset.csv", rows)


def link_toys(folder: Path, *names: str) -> Path:
    """`folder` holding links to the named toy submissions."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(TOYS / name, target_is_directory=True)
    return folder


def toy_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a run: the toys' interpreter, call log and pid file."""
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "TOY_CALLS": str(root / "calls.log"),
        "TOY_PIDS": str(root / "pids.log"),
        **extra,
    }


def calls(root: Path) -> Counter:
    """How often each (submission, input folder) ran."""
    log = root / "calls.log"
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def pids(root: Path) -> list[int]:
    log = root / "pids.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def leftovers(root: Path, wait: float = 5.0) -> list[int]:
    """The processes of the toys of a run in `root` still running after up to `wait`
    seconds: those whose environment or command line names its pid log. (Pids the toys
    write may be those of a PID namespace, so processes are found by this mark.)"""
    mark = str(root / "pids.log").encode()
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or not alive(int(entry.name), wait=0):
                continue
            try:
                marks = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in marks:
                found.append(int(entry.name))
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def alive(pid: int, wait: float = 5.0) -> bool:
    """Whether process `pid` still exists, and is not a zombie, after up to `wait` seconds
    (a killed process ends soon, not at once)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.02)


def competition_args(root: Path, dataset: tuple[Path, Path], **dirs: Path) -> list[str]:
    """The required flags for a run in `root`, and the given submission dirs."""
    return [
        f"--dataset_dir={dataset[0]}",
        f"--dataset_metadata={dataset[1]}",
        f"--intermediate_results_dir={root / 'intermediate'}",
        f"--output_dir={root / 'output'}",
        *(f"--{name}={path}" for name, path in dirs.items()),
    ]


def run_script(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))
