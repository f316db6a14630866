"""Helpers shared by the absl command-line scripts."""

from __future__ import annotations

import sys
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
