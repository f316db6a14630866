"""ImageNet class names in the slim 1001-class indexing (0 = background, 1..1000 = classes).

The classes are in sorted WordNet-ID order, so slim index = Keras/torchvision index + 1.
The data file is `defense/data/slim_class_names.txt` (see `defense/data/README.md`).
"""

from __future__ import annotations

import functools
from importlib import resources

NUM_CLASSES = 1001
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
