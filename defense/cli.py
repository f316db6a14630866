"""Helpers shared by the absl command-line scripts."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
EXIT_OK, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 2


def fail(program: str, message: str) -> int:
    """Print a one-paragraph error on stderr and return the fatal exit code."""
    print(f"{program}: error: {message}", file=sys.stderr)
    return EXIT_FATAL


def default_checkpoint(checkpoint_file: str) -> Path:
    """Where a registry model's checkpoint lives when no path is given."""
    return CHECKPOINT_DIR / checkpoint_file


def report_failures(program: str, failures: Mapping[str, str], done: str) -> int:
    """List the images that failed, with their reasons, on stderr; return the exit status."""
    if not failures:
        return EXIT_OK
    print(f"{program}: {len(failures)} image(s) could not be {done}:", file=sys.stderr)
    for name, reason in sorted(failures.items()):
        print(f"  {name}: {reason}", file=sys.stderr)
    return EXIT_PARTIAL
