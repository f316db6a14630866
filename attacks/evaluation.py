"""Accuracies as the paper reports them: target model versus defense model.

Target-model accuracy counts correctly classified patterns over all patterns
(one pattern for the plain model). The randomized defense is run `runs` times
with fresh patterns and averaged (the paper ran each experiment 3 times); the
diagnostic scenarios' fixed defenses run once.

An adversarial set written by `generate_adversarial` can be judged as its uint8
PNGs (what the competition sees) or as its lossless float arrays (before
rounding, which undoes much of a minimal-perturbation attack); every result
names the source it was measured on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from attacks.catalog import SOURCES
from attacks.generate import FLOAT_DIR, STATS_FILE
from attacks.scenarios import Scenario, fixed_defense_model, target_model
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.images import ImageError, InputError, read_image, to_model_input
from defense.randomization import make_generator


@dataclass(frozen=True)
class Accuracies:
    """Top-1 accuracy of the target model and of the defense on the same images."""

    target: float
    defense: float


def evaluate_batches(
    model: keras.Model,
    scenario: Scenario,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
    chunk_size: int = 256,
) -> Accuracies:
    """Both accuracies over batches of ([-1, 1] images, labels), one generator for all."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    target = target_model(model, scenario)
    if scenario.randomized_defense:
        ensemble = RandomizedEnsemble(
            model, config, generator=make_generator(seed), chunk_size=chunk_size
        )
        defense_runs = runs
    else:
        fixed = fixed_defense_model(model, scenario)
        defense_runs = 1
    target_correct = defense_correct = images_seen = 0
    for images, labels in batches:
        labels = np.asarray(labels)
        target_correct += int(target.correct_patterns(images, labels).sum())
        for _ in range(defense_runs):
            if scenario.randomized_defense:
                predictions = ensemble.predict(images)
            else:
                predictions = np.argmax(fixed.logits(images).numpy(), axis=1)
            defense_correct += int(np.sum(predictions == labels))
        images_seen += len(labels)
    if images_seen == 0:
        raise ValueError("no images to evaluate")
    return Accuracies(
        target=target_correct / (target.num_patterns * images_seen),
        defense=defense_correct / (defense_runs * images_seen),
    )


def evaluate(
    model: keras.Model,
    scenario: Scenario,
    images,
    labels,
    *,
    config: DefenseConfig,
    runs: int = 3,
    seed: int | None = None,
) -> Accuracies:
    """Both accuracies of one table cell pair, on images already in memory."""
    return evaluate_batches(
        model, scenario, [(np.asarray(images), labels)], config=config, runs=runs, seed=seed
    )


@dataclass(frozen=True)
class AdversarialSet:
    """The images of a `generate_adversarial` output directory, read from one source."""

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
        if self.source == "png":
            try:
                loaded = read_image(self.directory / name, size)
            except ImageError as error:
                raise InputError(f"{name}: {error}") from error
            if loaded.resized_from:
                raise InputError(f"{name} is not {size}x{size}")
            return loaded.pixels
        path = self.directory / FLOAT_DIR / f"{name}.npy"
        try:
            pixels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(
                f"cannot read {path}: {error} (float copies are written by "
                "generate_adversarial --save_float)"
            ) from error
        if pixels.shape != (size, size, 3):
            raise InputError(
                f"{path} holds an array of shape {pixels.shape}, not {(size, size, 3)}"
            )
        return pixels.astype(np.float32)


def read_adversarial_set(
    directory: str | Path, source: str, *, labels: Mapping[str, int] | None = None
) -> AdversarialSet:
    """The images listed in a directory's stats file, with their labels.

    Without `labels`, each image's label is the stats file's `label` column: the
    true label the attack was given, or the model's clean prediction if it had none.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    directory = Path(directory)
    stats = directory / STATS_FILE
    try:
        with open(stats, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise InputError(
            f"cannot read {stats}: {getattr(error, 'strerror', None) or error} "
            "(give a directory written by generate_adversarial)"
        ) from error
    if not rows or "image" not in rows[0] or "label" not in rows[0]:
        raise InputError(f"{stats} lists no images (is it a generate_adversarial stats file?)")
    names = [row["image"] for row in rows]
    if source == "float":
        missing = [name for name in names if not (directory / FLOAT_DIR / f"{name}.npy").is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} image(s) have no float copy in {directory / FLOAT_DIR} "
                f"({', '.join(missing[:10])}); generate_adversarial writes them with "
                "--save_float, or judge the PNGs with --source=png"
            )
    if labels is None:
        values = [int(row["label"]) for row in rows]
    else:
        missing = [name for name in names if name not in labels]
        if missing:
            raise InputError(f"the labels file has no label for {', '.join(missing[:10])}")
        values = [labels[name] for name in names]
    return AdversarialSet(directory, source, names, np.array(values, np.int64))
