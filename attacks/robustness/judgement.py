"""Success judged on the defense as deployed, over repeated draws of its patterns.

A randomized defense labels the same image differently from one call to the next,
so one classification flatters (or hurts) an attack by chance. As Lucas et al. 2023
recommend, each of R redraws classifies every image with the full defense
(`RandomizedEnsemble`: the config's `num_iterations` fresh patterns per image),
and the card reports the accuracy's mean and spread over the redraws and the
"any-fooled" accuracy: the fraction of images correct in all R redraws, i.e. the
robust accuracy when fooling the defense once counts as success.

Seeds are derived per unit of work (`derive_seed`: per redraw, per attack, per
sweep point) from one root seed, never from the order things run in: the same
root gives the same numbers whichever parts of a card are computed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt

from attacks.kinds import check_count
from defense.common.errors import ParameterError
from defense.config import DefenseConfig

# Derived seeds fit a signed int64 (tf.random.Generator.from_seed's range).
SEED_BITS = 63


def derive_seed(seed: int, *keys: str | float) -> int:
    """A seed for the unit of work named by `keys` (e.g. "redraw", 3), independent of
    the other units' seeds and of the order units run in."""
    text = "/".join(map(str, (seed, *keys)))
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def root_seed(seed: int | None) -> int:
    """`seed`, or a fresh one from OS entropy (recorded, so that a run can be replayed)."""
    return secrets.randbits(SEED_BITS) if seed is None else seed


def num_classes(model: keras.Model, config: DefenseConfig, images: np.ndarray) -> int:
    """How many classes the defense scores (one pattern of one image through it)."""
    from defense.randomized_defense import RandomizedDefense

    defense = RandomizedDefense(model, config, num_iterations=1, seed=0)
    return int(defense(images[:1]).shape[-1])


def checked_inputs(
    model: keras.Model, config: DefenseConfig, images: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """`images` as a float32 NHWC batch and `labels` as int64, one per image, each a class
    of the defense's model."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0 or not np.issubdtype(images.dtype, np.floating):
        raise ParameterError(
            f"images must be a non-empty float NHWC batch, got {images.dtype} {images.shape}",
            "images",
        )
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise ParameterError(
            f"need one integer label per image, got {labels.dtype} {labels.shape} for "
            f"images {images.shape}",
            "labels",
        )
    images = images.astype(np.float32)
    classes = num_classes(model, config, images)
    if labels.min() < 0 or labels.max() >= classes:
        raise ParameterError(
            f"labels must be classes of the model, in [0, {classes}), got values in "
            f"[{labels.min()}, {labels.max()}]",
            "labels",
        )
    return images, labels.astype(np.int64)


@dataclass(frozen=True)
class Accuracy:
    """Accuracy over redraws: mean and spread of the per-redraw accuracies, and the
    fraction of images correct in every redraw."""

    mean: float
    std: float
    any_fooled: float


@dataclass(frozen=True, eq=False)
class Redraws:
    """Per redraw and image, whether the deployed defense labelled the image correctly."""

    correct: np.ndarray  # [R, N] bool

    @property
    def accuracy_mean(self) -> float:
        """The mean over redraws of the fraction of images correct."""
        return float(self.correct.mean())

    @property
    def accuracy_std(self) -> float:
        """The spread of the per-redraw accuracies (population standard deviation)."""
        return float(self.correct.mean(axis=1).std())

    @property
    def any_fooled_accuracy(self) -> float:
        """The fraction of images correct in all redraws (robust under "fooled at least once")."""
        return float(self.correct.all(axis=0).mean())

    @property
    def correct_counts(self) -> np.ndarray:
        """Per image [N], in how many redraws it was correct."""
        return self.correct.sum(axis=0)

    def summary(self) -> Accuracy:
        """The three accuracies the card reports."""
        return Accuracy(self.accuracy_mean, self.accuracy_std, self.any_fooled_accuracy)


def redraw_accuracy(
    model: keras.Model,
    config: DefenseConfig,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    redraws: int = 5,
    seed: int | None = None,
    chunk_size: int = 16,
) -> Redraws:
    """Classify all `images` `redraws` times with the full defense, fresh patterns each
    time (redraw r's from a seed derived from `seed` and r; OS entropy by default);
    `chunk_size` items go through the network per pass."""
    from defense.ensemble import RandomizedEnsemble

    check_count("redraws", redraws, 1)
    check_count("chunk_size", chunk_size, 1)
    images, labels = checked_inputs(model, config, images, labels)
    root = root_seed(seed)
    ensemble = RandomizedEnsemble(model, config, seed=0, chunk_size=chunk_size)
    correct = []
    for r in range(redraws):
        ensemble.generator.reset_from_seed(derive_seed(root, "redraw", r))
        correct.append(ensemble.predict(images) == labels)
    return Redraws(np.stack(correct))


def keep_strongest(candidates: Sequence[npt.ArrayLike], judged: Sequence[Redraws]) -> np.ndarray:
    """Per image, the candidate adversarial (of restarts, of attacks) the judgement found
    correct in the fewest redraws; the first such candidate on ties.

    Judge all candidates with the same seed (the same patterns), and report the kept
    images on a fresh judgement: picked on these draws, they flatter the attack there.
    """
    if not candidates or len(candidates) != len(judged):
        raise ParameterError(
            f"need one judgement per candidate and at least one candidate, got "
            f"{len(candidates)} candidates and {len(judged)} judgements",
            "candidates",
            "judged",
        )
    stacked = np.stack([np.asarray(candidate) for candidate in candidates])  # [C, N, H, W, 3]
    counts = np.stack([judgement.correct_counts for judgement in judged])  # [C, N]
    if counts.shape != stacked.shape[:2]:
        raise ParameterError(
            f"each judgement must judge its candidate's {stacked.shape[1]} images, got "
            f"{counts.shape[1]}",
            "judged",
        )
    best = np.argmin(counts, axis=0)
    return stacked[best, np.arange(stacked.shape[1])]
