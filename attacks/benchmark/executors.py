"""The `executors` run of the benchmark: a robustness card of the trained digits CNN
computed in cells one after another in this process (`LocalExecutor`) and as Ray
tasks on a local instance of this machine's CPUs (`RayExecutor`), timed side by side
in one run, with the speed-up, the cells' mean wall time and Ray's cost per cell.
Both cards must be equal (the same seeds per cell), which the run checks."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from attacks.benchmark.machine import report
from attacks.benchmark.options import BenchmarkOptions

# The card's settings: small enough for a CPU, with enough cells to spread.
CARD: dict[str, Any] = {
    "epsilon": 16.0,
    "redraws": 2,
    "iterations": 10,
    "samples": 4,
    "sweep_samples": (1, 4),
    "sweep_iterations": (5, 10),
    "cosine_samples": (1, 4),
    "epsilons": (8.0, 255.0),
    "judge_chunk_size": 128,
}


def executors_benchmark(options: BenchmarkOptions) -> None:
    """The card on both executors, timed in one run."""
    from attacks.execution.executor import LocalExecutor, RayExecutor
    from attacks.robustness.card import evaluate_robustness
    from defense.testing.digits import DEFENSE, train

    digits = train()
    config = DEFENSE.replace(num_iterations=options.num_iterations)
    images, labels = digits.x_test[: options.images], digits.y_test[: options.images]
    shard_size = max(1, options.images // 4)
    cpus = os.cpu_count() or 1
    report(
        "card",
        f"digits CNN, {len(images)} images in shards of {shard_size}, "
        f"{config.num_iterations}-pattern defense, {CARD['iterations']} iterations of "
        f"{CARD['samples']} EOT samples",
    )
    cards, seconds, cells = {}, {}, {}
    for name in ("local", "ray"):
        executor = RayExecutor(num_cpus=cpus) if name == "ray" else LocalExecutor()
        times: list[float] = []

        def progress(done: int, total: int, key: str | None, times: list[float] = times) -> None:
            times.append(time.perf_counter())

        try:
            start = time.perf_counter()
            cards[name] = evaluate_robustness(
                digits.model,
                config,
                images,
                labels,
                seed=options.seed,
                shard_size=shard_size,
                executor=executor,
                progress=progress,
                **CARD,
            )
            seconds[name] = time.perf_counter() - start
        finally:
            executor.close()
        cells[name] = len(times) - 1
        detail = "this process" if name == "local" else f"Ray, local instance of {cpus} CPUs"
        report(f"{name} executor", f"{seconds[name]:.1f} s for {cells[name]} cells ({detail})")
    local, ray = (
        dataclasses.replace(
            card, attacks=tuple(dataclasses.replace(a, seconds=0.0) for a in card.attacks)
        )
        for card in (cards["local"], cards["ray"])
    )
    report("same card on both", "yes" if local == ray else "NO: the executors disagree")
    report("ray speed-up", f"{seconds['local'] / seconds['ray']:.2f}x on {cpus} CPUs")
    per_cell = seconds["local"] / cells["local"]
    overhead = max(0.0, seconds["ray"] * min(cpus, cells["ray"]) / cells["ray"] - per_cell)
    report("cell", f"{per_cell:.2f} s mean here; Ray's extra per cell about {overhead:.2f} s")
