"""The robustness card's plots: robust accuracy against epsilon, EOT samples and
iterations (mean with the redraws' spread, any-fooled dashed, the converged point
marked), and the EOT gradient cosine against K; each as PNG and PDF, drawn with
matplotlib's object API (no pyplot, no display) and written atomically by
`attacks.paper.plots.save`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attacks.paper.plots import save
from attacks.robustness.card import Card
from attacks.robustness.convergence import Sweep


def _sweep(axes: Axes, sweep: Sweep, label: str) -> None:
    """Accuracy (mean ± std over redraws, any-fooled) against the sweep's values."""
    means = [100 * accuracy.mean for accuracy in sweep.accuracies]
    stds = [100 * accuracy.std for accuracy in sweep.accuracies]
    axes.errorbar(sweep.values, means, yerr=stds, marker="o", capsize=3, label="mean ± std")
    fooled = [100 * accuracy.any_fooled for accuracy in sweep.accuracies]
    axes.plot(sweep.values, fooled, "--", marker="x", label="any-fooled")
    if sweep.converged_at is not None:
        axes.axvline(sweep.converged_at, color="gray", linestyle=":", label="converged")
    axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.set_ylabel("robust accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.legend()


def _cosine(axes: Axes, card: Card) -> None:
    """The cosine of two independent K-sample EOT gradients against K."""
    ks = [k for k, _ in card.gradient_cosine]
    axes.plot(ks, [cosine for _, cosine in card.gradient_cosine], marker="o")
    axes.set_xscale("log")
    axes.set_xlabel("EOT samples K")
    axes.set_ylabel("gradient cosine")
    axes.set_ylim(min(0.0, *(c for _, c in card.gradient_cosine)) - 0.05, 1.05)


def _figures(card: Card) -> dict[str, tuple[str, Callable[[Axes], None]]]:
    """File stem -> (title, what draws it)."""
    budget = card.budget
    return {
        "accuracy_vs_epsilon": (
            "APGD-EOT against the budget",
            lambda axes: _sweep(axes, card.budget_sweep, "epsilon (pixel units)"),
        ),
        "accuracy_vs_samples": (
            f"APGD-EOT, {budget.iterations} iterations",
            lambda axes: _sweep(axes, card.samples_sweep, "EOT samples per step"),
        ),
        "accuracy_vs_iterations": (
            f"APGD-EOT, {budget.samples} EOT samples",
            lambda axes: _sweep(axes, card.iterations_sweep, "iterations"),
        ),
        "gradient_cosine": ("EOT gradient consistency", lambda axes: _cosine(axes, card)),
    }


def write_plots(card: Card, folder: str | os.PathLike) -> list[Path]:
    """Draw the card's plots into `folder`, each as PNG and PDF; return the paths."""
    written = []
    for stem, (title, draw) in _figures(card).items():
        figure = Figure(figsize=(6.0, 4.0), layout="constrained")
        axes = figure.add_subplot()
        draw(axes)
        axes.set_title(f"{card.name}: {title}")
        axes.grid(alpha=0.3)
        written += save(figure, Path(folder) / stem)
    return written
