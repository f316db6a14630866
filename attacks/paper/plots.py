"""The run's figures, as PNG and PDF: grouped bars per table, and a Figure-1 triptych.

Per table: one panel per model, the attack rows along x, our target-model and
defense-model accuracies as bars and the paper's as black marks on them (Table 1:
the models along x, without and with randomization). The triptych shows one image
as the paper's Figure 1 does: clean (with the plain model's class), the
perturbation magnified 10 times around mid-grey, and the adversarial image (the
plain model's class, and the defense's).

Figures are drawn with matplotlib's object API (no pyplot, no global state or
display) and written atomically.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attacks.paper.tables import CLEAN, Column, Measured, PaperTable
from defense.common.files import write_atomic

FORMATS = ("png", "pdf")
MAGNIFY = 10
_COLOURS = ("#4c72b0", "#dd8452")


def save(figure: Figure, stem: str | os.PathLike) -> list[Path]:
    """Write `figure` as `<stem>.png` and `<stem>.pdf`; return the paths."""
    paths = [Path(f"{stem}.{kind}") for kind in FORMATS]
    for path in paths:
        write_atomic(path, functools.partial(_savefig, figure, path.suffix[1:]))
    return paths


def _savefig(figure: Figure, kind: str, handle: BinaryIO) -> None:
    figure.savefig(handle, format=kind, dpi=150)


def _bars(
    axes: Axes, labels: Sequence[str], ours: np.ndarray, paper: np.ndarray, sides: Sequence[str]
) -> None:
    """Two bars per label (ours, as %), with the paper's values as black marks."""
    positions = np.arange(len(labels))
    width = 0.38
    for side, name in enumerate(sides):
        offset = (side - 0.5) * width
        axes.bar(positions + offset, ours[:, side], width, label=name, color=_COLOURS[side])
        axes.scatter(
            positions + offset,
            paper[:, side],
            marker="_",
            s=200,
            color="black",
            zorder=3,
            label="paper" if side == 0 and np.isfinite(paper).any() else None,
        )
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 105)
    axes.grid(axis="y", alpha=0.3)


def table_figure(
    table: PaperTable,
    columns: Sequence[Column],
    measured: Measured,
    rows: Sequence[tuple[str, str]],
) -> Figure:
    """Grouped bars of target vs defense accuracy per attack and model (NaN: missing)."""

    def values(model: str, paper_model: str | None, row: str) -> tuple[list[float], list[float]]:
        pair = measured.get((model, row))
        ours = [np.nan, np.nan] if pair is None else [100 * pair[0], 100 * pair[1]]
        reference = table.paper(row, paper_model) if paper_model else None
        return ours, [np.nan, np.nan] if reference is None else list(reference)

    if table.clean:
        figure = Figure(figsize=(max(4.0, 1.6 * len(columns)), 4.0), layout="constrained")
        axes = figure.subplots()
        pairs = [values(c.model, c.paper, CLEAN) for c in columns]
        _bars(
            axes,
            [c.title for c in columns],
            np.array([p[0] for p in pairs]),
            np.array([p[1] for p in pairs]),
            ("w/o randomization", "w randomization"),
        )
        axes.set_ylabel("top-1 accuracy (%)")
        axes.legend(fontsize=8, loc="lower right")
    else:
        figure = Figure(figsize=(3.6 * len(columns) + 0.6, 4.2), layout="constrained")
        panels = np.atleast_1d(figure.subplots(1, len(columns), sharey=True, squeeze=False)[0])
        for axes, column in zip(panels, columns, strict=True):
            pairs = [values(column.model, column.paper, row) for row, _ in rows]
            _bars(
                axes,
                [label for _, label in rows],
                np.array([p[0] for p in pairs]),
                np.array([p[1] for p in pairs]),
                ("target model", "defense model"),
            )
            axes.set_title(column.title, fontsize=10)
        panels[0].set_ylabel("top-1 accuracy (%)")
        panels[-1].legend(fontsize=8, loc="upper right")
    figure.suptitle(f"Table {table.number}: {table.caption}", fontsize=11)
    return figure


def short_name(name: str) -> str:
    """A class name's first synonym: 'king penguin, Aptenodytes patagonica' -> 'king penguin'."""
    return name.split(",")[0].strip()


def triptych(
    clean: np.ndarray,
    adversarial: np.ndarray,
    *,
    clean_class: str,
    adversarial_class: str,
    defense_class: str,
    attack: str,
) -> Figure:
    """Clean image, perturbation x10 around mid-grey, adversarial image (uint8 [H, W, 3])."""
    delta = adversarial.astype(np.float32) - clean.astype(np.float32)
    magnified = np.clip(127.5 + MAGNIFY * delta, 0, 255).astype(np.uint8)
    figure = Figure(figsize=(9.0, 3.6), layout="constrained")
    panels = figure.subplots(1, 3)
    shown = (
        (clean, f"clean: {short_name(clean_class)}"),
        (magnified, f"perturbation x{MAGNIFY} ({attack})"),
        (
            adversarial,
            f"adversarial: {short_name(adversarial_class)}\ndefense: {short_name(defense_class)}",
        ),
    )
    for axes, (pixels, title) in zip(panels, shown, strict=True):
        axes.imshow(pixels, interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    return figure
