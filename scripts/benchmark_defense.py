"""Benchmark the randomized ensemble against a naive loop and the machine's matmul peak.

Measured side by side in one run, on deterministic synthetic weights:
- our challenge-config throughput (all patterns of a batch in fixed-size chunks),
- a naive loop shaped like the original entry (per batch, 30 sequential eager
  forward calls, each with its own resize + pad),
- the achieved GFLOP/s against a float32 matmul peak measured in the same run,
- the projected time for one competition batch (100 images, 500 s budget),
- bfloat16's speed-up and its label agreement with float32,
- on each GPU TensorFlow sees, for float32, float16 and bfloat16: pattern-forwards
  per second of the challenge ensemble and the projected time of one competition
  batch (100 images x 30 patterns) against the budget (one line saying they are not
  measured where there is no GPU).
It first describes the machine (OS, CPU, TensorFlow and CUDA builds, GPUs).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "ens_adv_inception_resnet_v2", "Registry model name.")
flags.DEFINE_integer("images", 16, "Images to classify per measurement.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Images per batch (the original used 16).", lower_bound=1)
flags.DEFINE_integer("num_iterations", 30, "Patterns per image.", lower_bound=1)
flags.DEFINE_integer("chunk_size", 32, "Patterns per forward pass in our ensemble.", lower_bound=1)
flags.DEFINE_boolean("naive", True, "Also time the naive original-shaped loop.")
flags.DEFINE_boolean("bfloat16", True, "Also time bfloat16 and compare its labels.")
flags.DEFINE_integer("seed", 0, "Seed for images, weights and patterns.")

COMPETITION_BATCH = 100
COMPETITION_BUDGET_S = 500.0
PEAK_TARGET = 0.8
GPU_PRECISIONS = ("float32", "float16", "bfloat16")


def report(label: str, value: str) -> None:
    """One aligned line of the benchmark's output."""
    print(f"{label + ':':<32}{value}", flush=True)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> None:
    """What the figures were measured on: OS, CPU, Python, TensorFlow and its CUDA, GPUs."""
    import tensorflow as tf

    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    report("machine", f"{system}; {cpu_name()}, {os.cpu_count()} logical CPUs")
    build = tf.sysconfig.get_build_info()
    cuda = ""
    if build.get("is_cuda_build"):
        cuda = f" (built for CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')})"
    report("software", f"Python {platform.python_version()}, TensorFlow {tf.__version__}{cuda}")
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        name = details.get("device_name", "unknown GPU")
        if capability:
            name += f", compute capability {capability[0]}.{capability[1]}"
        report(f"  {gpu.name.removeprefix('/physical_device:')}", name)


def matmul_peak(dtype: str, seconds: float = 3.0) -> float:
    """Best GFLOP/s of square matmuls of a few sizes, each repeated for about `seconds`."""
    import tensorflow as tf

    best = 0.0
    for n in (1024, 2048, 3072):
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        matmul = tf.function(tf.linalg.matmul)
        matmul(a, b).numpy()
        repeats, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            result = matmul(a, b)
            repeats += 1
        result.numpy()
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def smooth_images(count: int, seed: int) -> np.ndarray:
    """Image-like inputs in [-1, 1]: coarse random colour fields upsampled, plus fine noise."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (count, 8, 8, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, [299, 299], "bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), -1, 1).astype(np.float32)


def build_model(name: str, precision: str):
    from defense import models
    from defense.models.synthetic import assign_synthetic_weights

    model = models.build(name, precision=precision)
    assign_synthetic_weights(model, seed=FLAGS.seed)
    return model


def time_ensemble(model, config, images: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds per image of our ensemble (after a warm-up batch) and its labels."""
    from defense.ensemble import RandomizedEnsemble

    ensemble = RandomizedEnsemble(model, config, seed=FLAGS.seed, chunk_size=FLAGS.chunk_size)
    enough_for_a_full_chunk = -(-FLAGS.chunk_size // config.num_iterations)
    ensemble.predict(images[:enough_for_a_full_chunk])
    ensemble.generator.reset_from_seed(FLAGS.seed)
    start = time.perf_counter()
    labels = np.concatenate(
        [
            ensemble.predict(images[i : i + FLAGS.batch_size])
            for i in range(0, len(images), FLAGS.batch_size)
        ]
    )
    return (time.perf_counter() - start) / len(images), labels


def gpu_figures(config, images: np.ndarray) -> None:
    """Per GPU and precision: pattern-forwards/s of our ensemble and one competition batch.

    A competition batch is 100 images x the challenge's 30 patterns, on one GPU.
    Labels are compared with float32 on the same GPU (same seed, same patterns).
    """
    import tensorflow as tf

    from defense.config import load_config

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        report("GPU figures", "not measured: TensorFlow sees no GPU")
        return
    patterns = COMPETITION_BATCH * load_config("challenge").num_iterations
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    for gpu in gpus:
        device = gpu.name.removeprefix("/device:")
        labels32 = None
        for precision in GPU_PRECISIONS:
            with tf.device(gpu.name):
                seconds, labels = time_ensemble(build_model(FLAGS.model, precision), config, images)
            rate = config.num_iterations / seconds
            projected = patterns / rate
            within = "within" if projected <= COMPETITION_BUDGET_S else "OVER"
            kind = f"{precision} (TF32 on)" if precision == "float32" and tf32 else precision
            report(f"{device}, {kind}", f"{rate:.1f} pattern-forwards/s")
            report(
                "  one competition batch",
                f"{projected:.1f} s for {COMPETITION_BATCH} x {patterns // COMPETITION_BATCH} "
                f"patterns: {within} the {COMPETITION_BUDGET_S:.0f} s budget",
            )
            if labels32 is None:
                labels32 = labels
            else:
                agreement = float(np.mean(labels == labels32))
                agree = f"{agreement:.1%} of {len(images)} images agree with float32"
                report("  label agreement", agree)


def time_naive(model, config, images: np.ndarray) -> float:
    """Seconds per image of the original's shape: one eager forward call per pattern per batch."""
    import tensorflow as tf

    from defense.randomized_defense import pattern_scores

    rng = np.random.default_rng(FLAGS.seed)

    def run(batch: np.ndarray, iterations: int = config.num_iterations) -> np.ndarray:
        total = 0
        for _ in range(iterations):
            if rng.integers(2):
                batch = batch[:, :, ::-1, :]
            size = int(rng.integers(config.low, config.high))
            top, left = (int(rng.integers(0, config.out_size - size + 1)) for _ in range(2))
            resized = tf.raw_ops.ResizeNearestNeighbor(
                images=batch, size=[size, size], align_corners=False, half_pixel_centers=False
            )
            padding = [
                [0, 0],
                [top, config.out_size - size - top],
                [left, config.out_size - size - left],
                [0, 0],
            ]
            outputs = model(tf.pad(resized, padding), training=False)
            total += pattern_scores(outputs, config.aux_weight).numpy()
        return np.argmax(total, axis=1)

    run(images[: FLAGS.batch_size], iterations=1)
    start = time.perf_counter()
    for i in range(0, len(images), FLAGS.batch_size):
        run(images[i : i + FLAGS.batch_size])
    return (time.perf_counter() - start) / len(images)


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from defense import models
    from defense.config import load_config
    from defense.models.cost import forward_flops

    config = load_config("challenge").replace(num_iterations=FLAGS.num_iterations)
    describe_machine()
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    images = smooth_images(FLAGS.images, FLAGS.seed)
    gflop = forward_flops(models.build(FLAGS.model, input_size=config.out_size)) / 1e9
    work = gflop * config.num_iterations

    report("device", f"{device}; {FLAGS.model}, {gflop:.2f} GFLOP per {config.out_size}px pattern")
    peak = matmul_peak("float32")
    report("float32 matmul peak", f"{peak:.1f} GFLOP/s")

    model = build_model(FLAGS.model, "float32")
    ours, labels32 = time_ensemble(model, config, images)
    achieved = work / ours
    met = "met" if achieved / peak >= PEAK_TARGET else "NOT met"
    projected = COMPETITION_BATCH * ours
    within = "within" if projected <= COMPETITION_BUDGET_S else "OVER"
    report("ours, float32", f"{1 / ours:.3f} images/s, {config.num_iterations} patterns each")
    report("  achieved", f"{achieved:.1f} GFLOP/s = {achieved / peak:.2f} x matmul peak")
    report("  target", f">= {PEAK_TARGET:.2f} x matmul peak: {met}")
    report("  one competition batch", f"{projected:.1f} s for {COMPETITION_BATCH} images")
    report("  budget", f"{COMPETITION_BUDGET_S:.0f} s: {within}")
    if FLAGS.naive:
        naive = time_naive(model, config, images)
        report("naive original-shaped loop", f"{1 / naive:.3f} images/s")
        report("  speed-up ours / naive", f"{naive / ours:.2f} x")
    if FLAGS.bfloat16:
        del model
        report("bfloat16 matmul peak", f"{matmul_peak('bfloat16'):.1f} GFLOP/s")
        ours16, labels16 = time_ensemble(build_model(FLAGS.model, "bfloat16"), config, images)
        report("ours, bfloat16", f"{1 / ours16:.3f} images/s")
        report("  speed-up bfloat16 / float32", f"{ours / ours16:.2f} x")
        agreement = float(np.mean(labels16 == labels32))
        report("  label agreement", f"{agreement:.1%} of {len(images)} images agree with float32")
    gpu_figures(config, images)


if __name__ == "__main__":
    app.run(main)
