"""Host folders as a container's mounts (read-only like `:ro`, owned, removed whatever
wrote into them) and the small test images put in them."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["img_0.png", "img_1.png"]


def remove_tree(path: Path) -> None:
    """Delete a replay root, read-only folders and files other uids wrote included."""
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    for folder, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(folder, name)
            if not os.path.islink(child):
                with contextlib.suppress(OSError):
                    os.chmod(child, 0o700)
    shutil.rmtree(path)


def walk_modes(folder: Path, *, dirs: int, files: int, clear: int = 0) -> None:
    """OR mode bits into every folder and file under `folder` (symlinks untouched)."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod((mode | (dirs if path.is_dir() else files)) & ~clear)


def make_read_only(folder: Path) -> None:
    """Like a `:ro` mount: no write bit anywhere, readable by all (owned by root when root)."""
    walk_modes(folder, dirs=0o555, files=0o444, clear=0o222)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mode, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def smooth_image(seed: int, size: int = 299) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def write_pngs(folder: Path) -> None:
    for i, name in enumerate(NAMES):
        Image.fromarray(smooth_image(i)).save(folder / name)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)
