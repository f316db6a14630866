"""Expensive test data computed once per run and shared by the pytest-xdist workers."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

import numpy as np
import pytest


def run_once(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    compute: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """`compute()` once per test run, its arrays shared by every pytest-xdist worker.

    The first worker to ask computes and stores them (`name`.npz in the run's shared
    temporary folder, made afresh by every run); the others wait on a lock and load
    them, so an expensive fixture is neither computed twice nor pinned with all its
    users to one worker.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / f"{name}.npz"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            arrays = compute()
            partial = path.with_name(path.stem + ".partial.npz")
            np.savez(partial, **arrays)
            partial.replace(path)
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}
