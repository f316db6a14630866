"""Which registry architecture a checkpoint holds, or how it differs from the closest one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from defense.models.checkpoint import ManifestDiff, compare_manifest
from defense.models.registry import REGISTRY


@dataclass
class Identification:
    """Registry names whose architecture fits exactly, else the closest one and the diff."""

    matches: list[str]
    closest: list[str]
    diff: ManifestDiff


def _architectures() -> dict[object, list[str]]:
    """Registry names grouped by builder: entries that share one differ only in weights."""
    groups: dict[object, list[str]] = {}
    for name, spec in REGISTRY.items():
        groups.setdefault(spec.build, []).append(name)
    return groups


def identify(shapes: Mapping[str, tuple[int, ...]]) -> Identification:
    """Compare checkpoint variable shapes with every registry architecture."""
    from defense.models import expected_shapes

    best: tuple[int, list[str], ManifestDiff] | None = None
    for names in _architectures().values():
        diff = compare_manifest(expected_shapes(names[0]), shapes)
        if not diff:
            return Identification(matches=names, closest=names, diff=diff)
        distance = len(diff.missing) + len(diff.unexpected) + len(diff.mis_shaped)
        if best is None or distance < best[0]:
            best = (distance, names, diff)
    assert best is not None
    return Identification(matches=[], closest=best[1], diff=best[2])
