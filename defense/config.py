"""Defense settings (the paper's, the challenge entry's, none) loaded from configs/*.json.

The shipped configs are package data (`defense.configs`, the repository's top-level
`configs/` folder), found with `importlib.resources`, so an installed copy works
without the source tree.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from defense.common.errors import ParameterError

SHIPPED = "defense.configs"
# The most patterns per image a config may ask for (the entry uses 30, the paper 1).
# Every pattern is one forward pass of the network per image (seconds on a CPU), and
# a batch's patterns are drawn and held at once; the bound refuses a typo such as
# 2000000000, which would allocate gigabytes before the first forward pass.
MAX_ITERATIONS = 10_000


# How a pattern resizes: TF1's legacy nearest neighbour (the entry's) or TF2's bilinear.
METHODS = ("nearest", "bilinear")


def validate_range(low: int, high: int, out_size: int) -> None:
    """Check a size range [low, high) fits an out_size canvas."""
    if not 1 <= low < high <= out_size + 1:
        raise ValueError(
            f"resize range [{low}, {high}) must satisfy 1 <= low < high <= out_size + 1 "
            f"(out_size={out_size})"
        )


@dataclass(frozen=True)
class DefenseConfig:
    """How images are randomized and how per-pattern predictions are combined.

    With `randomize=False` the classifier sees the images as they are, once.
    """

    name: str
    randomize: bool = True
    low: int = 310
    high: int = 331
    out_size: int = 331
    num_iterations: int = 30
    flip_probability: float = 0.5
    aux_weight: float = 0.4
    method: str = "nearest"
    per_image: bool = False

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            _check_type(item.name, getattr(self, item.name), str(item.type))
        if self.randomize:
            validate_range(self.low, self.high, self.out_size)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.num_iterations < 1:
            raise ParameterError(
                f"num_iterations must be >= 1, got {self.num_iterations}", "num_iterations"
            )
        if self.num_iterations > MAX_ITERATIONS:
            raise ParameterError(
                f"num_iterations must be <= {MAX_ITERATIONS}, got {self.num_iterations} (each "
                "pattern is a forward pass per image, and a batch's patterns are held at once)",
                "num_iterations",
            )
        if not (math.isfinite(self.flip_probability) and 0 <= self.flip_probability <= 1):
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if not (math.isfinite(self.aux_weight) and self.aux_weight >= 0):
            raise ValueError(f"aux_weight must be finite and >= 0, got {self.aux_weight}")

    def model_input_size(self, image_size: int) -> int:
        """The size of the images the classifier sees: the canvas, or the images as given."""
        return self.out_size if self.randomize else image_size

    def replace(self, **changes: Any) -> DefenseConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_TYPES = {"str": (str,), "bool": (bool,), "int": (int,), "float": (int, float)}


def _check_type(name: str, value: object, declared: str) -> None:
    """Refuse a field of the wrong JSON type: "310" for an int, 1.5 for an int, "false"
    for a bool (which Python would take as true), true for a number."""
    allowed = _TYPES[declared]
    if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
        expected = {"str": "a string", "bool": "true or false", "int": "an integer"}
        raise ValueError(f"{name} must be {expected.get(declared, 'a number')}, got {value!r}")


def _shipped() -> dict[str, Traversable]:
    """The packaged config files by name."""
    files = resources.files(SHIPPED).iterdir()
    return {file.name.removesuffix(".json"): file for file in files if file.name.endswith(".json")}


def available_configs() -> list[str]:
    """Names of the shipped configs."""
    return sorted(_shipped())


def load_config(name_or_path: str) -> DefenseConfig:
    """Load a shipped config by name (`challenge`, `paper`, `none`) or a JSON file by path."""
    source: Traversable | Path = Path(name_or_path)
    if not name_or_path.endswith(".json"):
        shipped = _shipped()
        if name_or_path not in shipped:
            raise ValueError(
                f"unknown config {name_or_path!r}; shipped configs: {', '.join(sorted(shipped))}"
                " (or give the path of a .json file)"
            )
        source = shipped[name_or_path]
    try:
        fields = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read config {source}: {error}") from error
    if not isinstance(fields, dict):
        raise ValueError(f"config {source} must hold a JSON object, got {type(fields).__name__}")
    known = {field.name for field in dataclasses.fields(DefenseConfig)}
    unknown = sorted(set(fields) - known - {"description"})
    if unknown:
        raise ValueError(f"config {source} has unknown keys {unknown}; known keys: {sorted(known)}")
    fields.pop("description", None)
    fields.setdefault("name", source.name.removesuffix(".json"))
    try:
        return DefenseConfig(**fields)
    except ValueError as error:
        raise ValueError(f"config {source}: {error}") from error
