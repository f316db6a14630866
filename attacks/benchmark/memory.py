"""Peak memory of the runner: `run_defense` on a generated checkpoint, per number of images.

Each count runs in its own process, so that its peak RSS is that run's alone; a
runner that streams its input keeps the same peak for 16 images as for 160.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attacks.benchmark.defense_speed import smooth_images
from attacks.benchmark.machine import report
from attacks.benchmark.options import BenchmarkOptions

# The runner's console entry point, started by the interpreter that runs the benchmark.
_RUN_DEFENSE = "from defense.cli.run_defense import run; run()"


def memory_benchmark(options: BenchmarkOptions) -> None:
    """Peak RSS of `run_defense` on a generated slim checkpoint, for each `memory_images`."""
    from PIL import Image

    from defense.testing import write_generated_checkpoint

    model = options.model
    counts = sorted(options.memory_images)
    report(
        "runner",
        f"run_defense, {model}, batch {options.batch_size}, "
        f"{options.num_iterations} patterns, chunk {options.chunk_size}, generated checkpoint",
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        checkpoint = write_generated_checkpoint(folder / "model.ckpt", model, options.seed)
        pixels = ((smooth_images(max(counts), options.seed) + 1) * 127.5).round()
        pixels = pixels.astype(np.uint8)
        for count in counts:
            inputs = folder / f"images_{count}"
            inputs.mkdir()
            for i in range(count):
                Image.fromarray(pixels[i]).save(inputs / f"{i:04d}.png")
            command = [
                sys.executable,
                "-c",
                _RUN_DEFENSE,
                "--noprogress",
                f"--model={model}",
                f"--input_dir={inputs}",
                f"--output_file={folder / f'{count}.csv'}",
                f"--checkpoint_path={checkpoint}",
                f"--batch_size={options.batch_size}",
                f"--num_iterations={options.num_iterations}",
                f"--chunk_size={options.chunk_size}",
                f"--seed={options.seed}",
            ]
            start = time.perf_counter()
            peak_kib = child_peak_rss(command)
            seconds = time.perf_counter() - start
            report(f"  {count} images", f"peak RSS {peak_kib / 1024:.0f} MiB, {seconds:.0f} s")


def child_peak_rss(command: list[str]) -> int:
    """Peak RSS in KiB of `command`, run to success in a fresh intermediate process.

    The intermediate process has no other children, so its RUSAGE_CHILDREN peak is
    the command's own.
    """
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    return int(result.stdout.split()[-1])
