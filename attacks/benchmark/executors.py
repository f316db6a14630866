"""The `executors` run of the benchmark, timed side by side in one run on this
process (`LocalExecutor`) and on Ray tasks of a local instance of this machine's CPUs
(`RayExecutor`):

- a robustness card of the trained digits CNN in cells: the speed-up, the cells'
  mean wall time and Ray's cost per cell; both cards must be equal (the same seeds
  per cell), which the run checks;
- a toy competition (`TOY_ATTACKS` x `TOY_BATCHES` attack pieces and the defense
  pieces on their pools, submissions that sleep `TOY_SLEEP_S` and copy images or
  write labels): the speed-up, the harness's own cost per piece and Ray's; both runs'
  outputs must be equal (timings aside), which the run checks;
- projections (`projection`) of the full competition and of the paper's Tables 1-6
  on N devices, from those per-piece costs and one Inception-ResNet-v2 forward per
  image measured here, on this run's device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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


TOY_ATTACKS, TOY_DEFENSES, TOY_BATCHES, TOY_BATCH_SIZE = 3, 2, 4, 10
TOY_SLEEP_S = 1.0
TOY_ATTACK = 'sleep {sleep}\ncp "$1"/*.png "$2"/\n'
TOY_DEFENSE = (
    'sleep {sleep}\nfor f in "$1"/*.png; do n="${{f##*/}}"; echo "${{n%.png}},1"; done > "$2"\n'
)
# The outputs both executors must write alike (scores.json is compared without timings).
SAME_OUTPUTS = (
    "accuracy_on_attacks.csv",
    "defense_ranking.csv",
    "attack_ranking.csv",
    "all_classification.csv",
)
DEVICE_COUNTS = (8, 64, 512)


def executors_benchmark(options: BenchmarkOptions) -> None:
    """The card and the toy competition on both executors, then the projections."""
    card_benchmark(options)
    overhead, ray_extra = competition_benchmark(options)
    projections(options, overhead, ray_extra)


def card_benchmark(options: BenchmarkOptions) -> None:
    """The digits card on both executors, timed in one run."""
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


def _submission(folder: Path, kind: str, script: str) -> None:
    folder.mkdir(parents=True)
    metadata = {"type": kind, "container": "toy", "entry_point": "run.sh"}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    (folder / "run.sh").write_text("#!/bin/sh\n" + script.format(sleep=TOY_SLEEP_S))
    (folder / "run.sh").chmod(0o755)


def toy_competition(root: Path, seed: int) -> None:
    """A dataset of `TOY_BATCHES` x `TOY_BATCH_SIZE` small PNGs (`dataset/`, `dataset.csv`)
    and the toy submissions (`attacks/`, `defenses/`) in `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    dataset = root / "dataset"
    dataset.mkdir()
    rows = ["ImageId,TrueLabel,TargetClass"]
    for k in range(TOY_BATCHES * TOY_BATCH_SIZE):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(dataset / f"img{k:03d}.png")
        rows.append(f"img{k:03d},{k % 1000 + 1},{(k + 7) % 1000 + 1}")
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    for k in range(TOY_ATTACKS):
        _submission(root / "attacks" / f"attack{k}", "attack", TOY_ATTACK)
    for k in range(TOY_DEFENSES):
        _submission(root / "defenses" / f"defense{k}", "defense", TOY_DEFENSE)


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _outputs(folder: Path) -> tuple[Any, ...]:
    files = tuple((folder / name).read_bytes() for name in SAME_OUTPUTS)
    return (*files, _without_timings(json.loads((folder / "scores.json").read_text())))


def competition_benchmark(options: BenchmarkOptions) -> tuple[float, float]:
    """The toy competition on both executors, timed in one run; the harness's own
    seconds per piece (beyond the submission's) and Ray's extra seconds per piece."""
    from absl import logging

    from attacks.competition.harness import Options, prepare
    from attacks.execution.executor import LocalExecutor, RayExecutor

    cpus = os.cpu_count() or 1
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # not a line per piece
    seconds, pieces, outputs = {}, {}, {}
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        toy_competition(root, options.seed)
        for name in ("local", "ray"):
            competition = prepare(
                Options(
                    dataset_dir=root / "dataset",
                    dataset_metadata=root / "dataset.csv",
                    attacks_dir=root / "attacks",
                    defenses_dir=root / "defenses",
                    intermediate_results_dir=root / name / "intermediate",
                    output_dir=root / name / "output",
                    batch_size=TOY_BATCH_SIZE,
                    save_all_classification=True,
                )
            )
            executor = RayExecutor(num_cpus=cpus) if name == "ray" else LocalExecutor()
            counted = [0]

            def progress(
                done: int, total: int, label: str | None, counted: list[int] = counted
            ) -> None:
                counted[0] = total

            try:
                start = time.perf_counter()
                competition.run(executor, progress)
                seconds[name] = time.perf_counter() - start
            finally:
                executor.close()
            pieces[name] = counted[0]
            outputs[name] = _outputs(root / name / "output")
            detail = "this process" if name == "local" else f"Ray, local instance of {cpus} CPUs"
            report(
                f"toy competition, {name}",
                f"{seconds[name]:.1f} s for {pieces[name]} pieces ({detail})",
            )
    logging.set_verbosity(verbosity)
    report(
        "toy competition",
        f"{TOY_ATTACKS} attacks x {TOY_BATCHES} batches of {TOY_BATCH_SIZE}, {TOY_DEFENSES} "
        f"defenses on the pools; each piece sleeps {TOY_SLEEP_S:g} s and copies or labels",
    )
    same = outputs["local"] == outputs["ray"]
    report("same outputs on both", "yes" if same else "NO: the executors disagree")
    report("ray speed-up", f"{seconds['local'] / seconds['ray']:.2f}x on {cpus} CPUs")
    per_piece = seconds["local"] / pieces["local"]
    overhead = max(0.0, per_piece - TOY_SLEEP_S)
    ray_extra = max(0.0, seconds["ray"] * min(cpus, pieces["ray"]) / pieces["ray"] - per_piece)
    report(
        "piece",
        f"harness's own {overhead:.2f} s per piece here; Ray's extra about {ray_extra:.2f} s",
    )
    return overhead, ray_extra


def forward_seconds(seed: int) -> tuple[float, str]:
    """Seconds of one Inception-ResNet-v2 forward of one 331 px image (batch 16, generated
    weights) on this run's device, and the device's name."""
    import tensorflow as tf

    from attacks.benchmark.defense_speed import build_model

    model = build_model("ens_adv_inception_resnet_v2", "float32", seed)
    images = tf.random.stateless_uniform((16, 331, 331, 3), (seed, 0), -1.0, 1.0)
    forward = tf.function(lambda x: model(x, training=False))
    forward(images)
    times = []
    for _ in range(3):  # the fastest of three: the least disturbed by other load
        start = time.perf_counter()
        tf.nest.flatten(forward(images))[0].numpy()
        times.append(time.perf_counter() - start)
    per_image = min(times) / 16
    gpus = tf.config.list_logical_devices("GPU")
    device = gpus[0].name if gpus else f"this machine's CPU ({os.cpu_count()} cores)"
    return per_image, device


def paper_passes() -> dict[int, tuple[int, float]]:
    """Each of Tables 1-6: (the paper's images, forward-equivalents per image on one
    network), from its rows' attack settings and scenario."""
    from attacks.benchmark.projection import table_passes
    from attacks.catalog import get_attack
    from attacks.evaluation.scenarios import build_scenario
    from attacks.paper.run import RunOptions
    from attacks.paper.tables import ROWS, TABLES
    from defense.config import load_config

    runs, patterns = RunOptions(tables=tuple(TABLES)).runs, load_config("paper").num_iterations
    tables = {}
    for number, table in TABLES.items():
        scenario = build_scenario(table.scenario)
        fixed = scenario.defense_patterns
        defense = len(fixed) if fixed is not None else runs * patterns
        # An adaptive row attacks the defense itself (its EOT samples are its patterns);
        # on a fixed defense it is the plain attack through the defense's patterns.
        rows: dict[str, tuple[str | None, dict[str, Any]]] = {}
        adaptive: dict[str, tuple[str | None, dict[str, Any]]] = {}
        for name in table.rows():
            row = ROWS[name]
            if row.attack is None:
                rows[name] = (None, {})
            elif row.fixed is None:
                rows[name] = (row.attack, {**get_attack(row.attack).defaults, **row.params})
            elif fixed is None:
                adaptive[name] = (row.attack, {**get_attack(row.attack).defaults, **row.params})
            else:
                params = {**get_attack(row.fixed).defaults, "epsilon": row.params["epsilon"]}
                params.pop("samples", None)
                adaptive[name] = (row.fixed, params)
        attacked = len(scenario.target_patterns or ()) or 1
        per_image = table_passes(rows, attacked_patterns=attacked, defense_passes=defense)
        per_image += table_passes(adaptive, attacked_patterns=1, defense_passes=defense)
        tables[number] = (table.paper_images, per_image)
    return tables


def projections(options: BenchmarkOptions, overhead: float, ray_extra: float) -> None:
    """The full competition and Tables 1-6 on N devices (printed as projections)."""
    from attacks.benchmark import projection

    per_forward, device = forward_seconds(options.seed)
    report("IRv2 forward, 331 px", f"{per_forward * 1000:.0f} ms per image on {device}")
    per_piece = overhead + ray_extra
    defense_piece = projection.COMPETITION_BATCH * 30 * per_forward
    attack_pieces, defense_pieces = projection.competition_pieces()
    report(
        "competition (projection)",
        f"{projection.COMPETITION_DEFENSES} defenses x {projection.COMPETITION_ATTACKS} attacks "
        f"x {projection.COMPETITION_IMAGES} images: {attack_pieces} attack + {defense_pieces} "
        f"defense pieces, each + {per_piece:.2f} s of harness and Ray measured here",
    )
    workloads = [
        projection.competition(
            projection.TIME_LIMIT_S,
            projection.TIME_LIMIT_S,
            per_piece,
            "competition, every piece 500 s",
        ),
        projection.competition(
            projection.TIME_LIMIT_S, defense_piece, per_piece, "competition, defenses as ours"
        ),
    ]
    report(
        "  defenses as ours",
        f"{defense_piece:.0f} s per defense piece (100 images x 30 patterns); attacks 500 s",
    )
    tables = paper_passes()
    workloads.append(projection.paper_tables(tables, per_forward, "Tables 1-6, 4 networks"))
    report("  device", f"every device as {device}; days with every device busy")
    for workload in workloads:
        days = ", ".join(f"{workload.days_on(n):,.1f} d on {n}" for n in DEVICE_COUNTS)
        report(
            f"  {workload.name}",
            f"{workload.device_seconds / 86_400:,.0f} device-days; {days} (projection)",
        )
    for number, (images, per_image) in tables.items():
        report(
            f"  Table {number} (projection)",
            f"{images} images x {per_image:,.0f} forward-equivalents each per network",
        )
