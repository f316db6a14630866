"""The on-disk format of an adversarial set, written by `generate_adversarial` and read back.

An output directory holds, per input image, the adversarial `<name>` (uint8 PNG,
what the competition sees) and, when asked, `float/<name>.npy` (the float
adversarial before rounding, [0, 255] pixel units, float32); `stats.csv` holds a
row per image (`STATS_COLUMNS`: label attacked, L2 and L-infinity distances in
pixel units and the attacked model's prediction on both versions); `settings.json`
records what produced them (`attacks.evaluation.settings.AttackSettings`) and notes.
Every file is written atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attacks.evaluation.protocol import SOURCES
from attacks.evaluation.settings import AttackSettings
from defense.common.errors import InputError, ParameterError
from defense.common.files import write_atomic, write_csv_atomic, write_text_atomic
from defense.common.images import ImageError, check_size, read_image, to_model_input

STATS_FILE, SETTINGS_FILE, FLOAT_DIR = "stats.csv", "settings.json", "float"
STATS_COLUMNS = (
    "image",
    "label",
    "target",
    "clean_prediction",
    "l2_float",
    "linf_float",
    "prediction_float",
    "success_float",
    "l2_png",
    "linf_png",
    "prediction_png",
    "success_png",
)


def write_png_atomic(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Save uint8 [H, W, 3] pixels as an RGB PNG, atomically."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] pixels, got {pixels.dtype} {pixels.shape}")
    image = Image.fromarray(pixels, "RGB")
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))


def write_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save an array as `.npy` (lossless), atomically."""
    write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def read_float(path: Path, size: int) -> np.ndarray:
    """A float adversarial [size, size, 3] in pixel units, or `InputError` saying why not."""
    try:
        pixels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot read {path}: {error} (float copies are written by "
            "generate_adversarial --save_float)"
        ) from error
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"{path} holds an array of shape {pixels.shape}, not [H, W, 3]")
    try:
        check_size(pixels.shape[1], pixels.shape[0], size)
    except ImageError as error:
        raise InputError(f"{path} {error}") from error
    return pixels.astype(np.float32)


def read_settings(directory: str | Path) -> dict[str, Any]:
    """The settings a set was made with (its settings.json), or {} when it has none."""
    path = Path(directory) / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"cannot read {path}: {error}") from error
    if not isinstance(settings, dict):
        raise InputError(f"cannot read {path}: its settings are not an object")
    return settings


def read_stats(path: Path, *, required: Sequence[str] = STATS_COLUMNS) -> list[dict[str, str]]:
    """The rows of a stats file, checked to have the `required` columns."""
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in required if column not in (reader.fieldnames or ())]
            if missing:
                raise InputError(
                    f"{path} does not have the columns of a stats file (no "
                    f"{', '.join(missing)}; is it a generate_adversarial output?)"
                )
            return list(reader)
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise InputError(
            f"cannot read {path}: {getattr(error, 'strerror', None) or error} "
            "(give a directory written by generate_adversarial)"
        ) from error


def _flat(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with the attack's hyper-parameters at the top level, for comparison."""
    params = settings.get("params")
    return {
        **{key: value for key, value in settings.items() if key != "params"},
        **(params if isinstance(params, dict) else {}),
    }


class RunRecord:
    """An output directory's stats rows and settings: what is done, and by what run."""

    def __init__(self, output_dir: Path, settings: AttackSettings) -> None:
        self.output_dir = output_dir
        self.stats_path = output_dir / STATS_FILE
        self.settings_path = output_dir / SETTINGS_FILE
        self.settings = json.loads(json.dumps(asdict(settings)))
        self.rows = (
            {row["image"]: row for row in read_stats(self.stats_path)}
            if self.stats_path.exists()
            else {}
        )
        self._check_settings()

    def _check_settings(self) -> None:
        if not self.settings_path.exists():
            if self.rows:
                raise ParameterError(
                    f"{self.stats_path} exists without {SETTINGS_FILE}: cannot tell what made "
                    "it; use another output_dir",
                    "output_dir",
                )
            return
        recorded, current = _flat(read_settings(self.output_dir)), _flat(self.settings)
        differences = [
            f"{key}={recorded.get(key)!r} there, {current.get(key)!r} now"
            for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)
        ]
        if differences:
            raise ParameterError(
                f"{self.output_dir} holds the output of another run ({'; '.join(differences)}); "
                "use another output_dir to keep both",
                "output_dir",
            )

    def png_path(self, name: str) -> Path:
        return self.output_dir / name

    def npy_path(self, name: str) -> Path:
        return self.output_dir / FLOAT_DIR / f"{name}.npy"

    def is_done(self, name: str, *, save_float: bool) -> bool:
        """Whether image `name` has its PNG, its stats row and, if asked, its `.npy`."""
        return (
            name in self.rows
            and self.png_path(name).is_file()
            and (not save_float or self.npy_path(name).is_file())
        )

    def write_settings(self, notes: Mapping[str, object]) -> None:
        """Record the settings (and informative notes) of the run."""
        text = json.dumps({"settings": self.settings, **notes}, indent=2) + "\n"
        write_text_atomic(self.settings_path, text)

    def add(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Add or replace rows and rewrite the stats file atomically (settings first, if new)."""
        if not self.settings_path.exists():
            self.write_settings({})
        for row in rows:
            self.rows[str(row["image"])] = {key: str(row[key]) for key in STATS_COLUMNS}
        ordered = [self.rows[name] for name in sorted(self.rows)]
        write_csv_atomic(
            self.stats_path,
            [STATS_COLUMNS, *([row[key] for key in STATS_COLUMNS] for row in ordered)],
        )


@dataclass(frozen=True)
class AdversarialSet:
    """The images of an adversarial set's directory, read from one source."""

    directory: Path
    source: str
    names: list[str]
    labels: np.ndarray

    def batches(self, batch_size: int, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """([-1, 1] images, labels) batches; a missing or wrong file raises `InputError`."""
        for start in range(0, len(self.names), batch_size):
            names = self.names[start : start + batch_size]
            pixels = np.stack([self._pixels(name, size) for name in names])
            yield to_model_input(pixels), self.labels[start : start + batch_size]

    def _pixels(self, name: str, size: int) -> np.ndarray:
        if self.source == "float":
            return read_float(self.directory / FLOAT_DIR / f"{name}.npy", size)
        try:
            return read_image(self.directory / name, size, resize=False).pixels
        except ImageError as error:
            raise InputError(f"{name}: {error}") from error


def read_adversarial_set(
    directory: str | Path, source: str, *, labels: Mapping[str, int] | None = None
) -> AdversarialSet:
    """The images listed in a directory's stats file, with their labels.

    Without `labels`, each image's label is the stats file's `label` column: the
    true label the attack was given, or the model's clean prediction if it had none.
    """
    if source not in SOURCES:
        raise ParameterError(f"unknown source {source!r}; one of {', '.join(SOURCES)}", "source")
    directory = Path(directory)
    rows = read_stats(directory / STATS_FILE, required=("image", "label"))
    if not rows:
        raise InputError(f"{directory / STATS_FILE} lists no images")
    names = [row["image"] for row in rows]
    if source == "float":
        missing = [name for name in names if not (directory / FLOAT_DIR / f"{name}.npy").is_file()]
        if missing:
            raise ParameterError(
                f"{len(missing)} image(s) have no float copy in {directory / FLOAT_DIR} "
                f"({', '.join(missing[:10])}); generate_adversarial writes them with "
                "--save_float, or judge the PNGs (source png)",
                "source",
            )
    if labels is None:
        values = [int(row["label"]) for row in rows]
    else:
        missing = [name for name in names if name not in labels]
        if missing:
            raise InputError(f"the labels file has no label for {', '.join(missing[:10])}")
        values = [labels[name] for name in names]
    return AdversarialSet(directory, source, names, np.array(values, np.int64))
