"""ImageNet class names in the slim 1001-class indexing (0 = background, 1..1000 = classes).

The classes are in sorted WordNet-ID order, so slim index = Keras/torchvision index + 1.
The data file is `defense/data/slim_class_names.txt` (see `defense/data/README.md`).

Label spaces are converted here and only here: `slim_to_imagenet` and
`imagenet_to_slim` map labels between slim's 1..1000 and the 0..999 of ImageNet
without a background class (Keras, torchvision, robustml), and `imagenet_logits`
drops slim's background column from logits or scores.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np

NUM_CLASSES = 1001
IMAGENET_CLASSES = NUM_CLASSES - 1
BACKGROUND_WNID = "-"


def parse_table(text: str) -> tuple[tuple[str, str], ...]:
    """(wnid, name) per slim label from the data file's text; checks the format and the
    count, because a short or shifted table would silently mislabel every image."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        wnid, tab, name = line.partition("\t")
        if not (tab and wnid and name):
            raise ValueError(f"class names line {number}: expected '<wnid>\\t<name>'")
        entries.append((wnid, name))
    if len(entries) != NUM_CLASSES:
        raise ValueError(f"class names: {len(entries)} entries, expected {NUM_CLASSES}")
    return tuple(entries)


@functools.cache
def _entries() -> tuple[tuple[str, str], ...]:
    """The packaged table, read once."""
    data = resources.files("defense").joinpath("data/slim_class_names.txt")
    return parse_table(data.read_text(encoding="utf-8"))


def class_names() -> list[str]:
    """Human-readable names by slim label: 'background', 'tench, Tinca tinca', ..."""
    return [name for _, name in _entries()]


def wnids() -> list[str]:
    """WordNet IDs by slim label; index 0 (background, no synset) is `BACKGROUND_WNID`."""
    return [wnid for wnid, _ in _entries()]


def _integer_labels(labels: Any, low: int, high: int, space: str) -> np.ndarray:
    """`labels` as an int64 array, refusing non-integers and values outside [low, high]."""
    values = np.asarray(labels)
    if values.dtype == bool or not (
        np.issubdtype(values.dtype, np.integer)
        or (np.issubdtype(values.dtype, np.floating) and np.all(np.mod(values, 1) == 0))
    ):
        raise ValueError(f"labels must be integer {space} labels, got dtype {values.dtype}")
    outside = values[(values < low) | (values > high)]
    if outside.size:
        raise ValueError(f"labels must be {space} labels in {low}..{high}, got {outside[0]!r}")
    return values.astype(np.int64)


def slim_to_imagenet(labels: Any) -> np.ndarray:
    """Slim labels 1..1000 as ImageNet labels 0..999 (slim label - 1).

    Background (0) has no ImageNet label, so it is refused rather than mapped to -1,
    which would index the last class when used as an index.
    """
    slim = _integer_labels(labels, 1, IMAGENET_CLASSES, "slim (0 is background)")
    return slim - 1


def imagenet_to_slim(labels: Any) -> np.ndarray:
    """ImageNet labels 0..999 (Keras, torchvision, robustml) as slim labels 1..1000."""
    return _integer_labels(labels, 0, IMAGENET_CLASSES - 1, "ImageNet") + 1


def imagenet_logits(slim_logits: Any) -> Any:
    """Slim logits or scores [..., 1001] without the background column: [..., 1000],
    column i for ImageNet label i.

    Array-likes come back as numpy arrays; a TensorFlow tensor comes back as a
    tensor slice, so the conversion stays differentiable inside a `GradientTape`.
    """
    if not hasattr(slim_logits, "shape"):
        slim_logits = np.asarray(slim_logits)
    width = slim_logits.shape[-1] if len(slim_logits.shape) else None
    if width != NUM_CLASSES:
        raise ValueError(
            f"slim_logits must have {NUM_CLASSES} columns (background first), "
            f"got shape {tuple(slim_logits.shape)}"
        )
    return slim_logits[..., 1:]
