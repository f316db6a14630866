"""Defense settings (the paper's, the challenge entry's, none) loaded from configs/*.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from defense.randomization import METHODS, validate_range

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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
    flip: bool = True
    aux_weight: float = 0.4
    method: str = "nearest"
    per_image: bool = False

    def __post_init__(self):
        if self.randomize:
            validate_range(self.low, self.high, self.out_size)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")

    def replace(self, **changes) -> DefenseConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def available_configs() -> list[str]:
    """Names of the configs shipped in configs/."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str) -> DefenseConfig:
    """Load a shipped config by name (`challenge`, `paper`, `none`) or a JSON file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            shipped = ", ".join(available_configs())
            raise ValueError(
                f"unknown config {name_or_path!r}; shipped configs: {shipped}"
                " (or give the path of a .json file)"
            )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read config {path}: {error}") from error
    known = {field.name for field in dataclasses.fields(DefenseConfig)}
    unknown = sorted(set(fields) - known - {"description"})
    if unknown:
        raise ValueError(f"config {path} has unknown keys {unknown}; known keys: {sorted(known)}")
    fields.pop("description", None)
    fields.setdefault("name", path.stem)
    return DefenseConfig(**fields)
