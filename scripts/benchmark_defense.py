"""Benchmark the randomized ensemble against the original entry's shape and the machine's peak.

Measured side by side in one run, on deterministic generated weights and the same
image-like inputs, after the machine's description:
- the fair baseline: the original entry's loop, one compiled single-pattern
  forward pass of the whole batch (a `tf.function` of fixed shapes, resize and pad
  inside, like the entry's graph), called once per pattern as its `session.run` was;
- ours, exhaustive (every pattern) and with early exit, each also with XLA
  (`--xla`): seconds, ratio to the baseline, GFLOP/s against a float32 matmul peak
  measured in the same run, patterns evaluated per image, and the projected time
  of one competition batch (100 images) against its 500 s budget; all labels
  compared with the exhaustive run's;
- early exit's pattern saving on the trained digits CNN (clean and FGSM-16 test
  images), and the IRv2 projection: exhaustive ratio x the digits saving (generated
  weights give flat scores, on which the bound rarely fires, so their saving is
  printed but is not what a trained model saves);
- optionally bfloat16, and per GPU TensorFlow sees, float32/float16/bfloat16.

`--attacks` instead times the batched attacks against their un-batched equivalents
(`attacks.benchmark.speed`) on the digits CNN; `--memory` the peak RSS of the runner
(`run_defense`, a generated checkpoint) for two numbers of images.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "ens_adv_inception_resnet_v2", "Registry model name.")
flags.DEFINE_integer("images", 16, "Images to classify per measurement.", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Images per batch (the original used 16).", lower_bound=1)
flags.DEFINE_integer("num_iterations", 30, "Patterns per image.", lower_bound=1)
flags.DEFINE_integer("chunk_size", 16, "Patterns per forward pass in our ensemble.", lower_bound=1)
flags.DEFINE_boolean("baseline", True, "Time the original entry's loop (the fair baseline).")
flags.DEFINE_boolean("xla", True, "Also time ours with XLA (jit_compile=True).")
flags.DEFINE_boolean("digits", True, "Measure early exit's saving on the trained digits CNN.")
flags.DEFINE_boolean(
    "bfloat16",
    None,
    "Also time bfloat16 and compare its labels (default: where the CPU has bfloat16 units, "
    "avx512_bf16 or amx_bf16).",
)
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: its default).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: its default).")
flags.DEFINE_boolean("attacks", False, "Time the batched attacks against un-batched loops.")
flags.DEFINE_boolean("memory", False, "Measure the runner's peak RSS for --memory_images.")
flags.DEFINE_list("memory_images", ["16", "160"], "Numbers of images for --memory.")
flags.DEFINE_integer("seed", 0, "Seed for images, weights and patterns.")

COMPETITION_BATCH = 100
COMPETITION_BUDGET_S = 500.0
PEAK_TARGET = 0.9
SPEED_TARGET = 2.0
ATTACK_TARGET = 5.0
GPU_PRECISIONS = ("float32", "float16", "bfloat16")


def use_test_models() -> None:
    """Make the tests' trained digits CNN and slim checkpoint writer importable (once)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def report(label: str, value: str) -> None:
    """One aligned line of the benchmark's output."""
    print(f"{label + ':':<34}{value}", flush=True)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BF16_UNITS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    found = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(found.split(":", 1)[-1].split())


def cpu_features() -> str:
    """The vector and matrix units that matter for float32/bfloat16 speed."""
    wanted = ("avx2", "fma", "avx512f", "avx512_fp16", *BF16_UNITS, "amx_tile")
    present = cpu_flags()
    return ", ".join(flag for flag in wanted if flag in present) or "none of avx2/avx512/amx"


def describe_machine() -> None:
    """What the figures were measured on: OS, CPU, Python, TensorFlow and its CUDA, GPUs."""
    import tensorflow as tf

    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    report("machine", f"{system}; {cpu_name()}, {os.cpu_count()} logical CPUs")
    report("  vector units", cpu_features())
    build = tf.sysconfig.get_build_info()
    cuda = ""
    if build.get("is_cuda_build"):
        cuda = f" (built for CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')})"
    report("software", f"Python {platform.python_version()}, TensorFlow {tf.__version__}{cuda}")
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")
    threads = (
        f"intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
        f"inter-op {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}"
    )
    report("  settings", f"TF_ENABLE_ONEDNN_OPTS={onednn}; threads {threads}")
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
    from defense.testing.weights import assign_synthetic_weights

    model = models.build(name, precision=precision)
    assign_synthetic_weights(model, seed=FLAGS.seed)
    return model


def batches(images: np.ndarray):
    return [images[i : i + FLAGS.batch_size] for i in range(0, len(images), FLAGS.batch_size)]


def make_ensemble(model, config, **options):
    """Our ensemble, traced for any batch size before timing (a 2- and a 3-image call)."""
    from defense.ensemble import RandomizedEnsemble

    ensemble = RandomizedEnsemble(
        model, config, seed=FLAGS.seed, chunk_size=FLAGS.chunk_size, **options
    )
    warm = smooth_images(3, FLAGS.seed + 1)
    ensemble.predict(warm[:2])
    ensemble.predict(warm)
    return ensemble


def time_ensemble(ensemble, images: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Seconds per image, labels and mean patterns per image of one pass over `images`."""
    ensemble.generator.reset_from_seed(FLAGS.seed)
    evaluated_before = ensemble.patterns_evaluated
    start = time.perf_counter()
    labels = np.concatenate([ensemble.predict(batch) for batch in batches(images)])
    seconds = (time.perf_counter() - start) / len(images)
    return seconds, labels, (ensemble.patterns_evaluated - evaluated_before) / len(images)


def time_baseline(model, config, images: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds per image and labels of the original entry's loop, with our patterns.

    One `tf.function` of fixed input shapes (the batch, and the pattern as scalars):
    flip, legacy nearest-neighbour resize, zero pad and the network, as the entry's
    graph; called once per pattern per batch, as its `session.run`, the scores summed
    in float64 outside, as its NumPy loop. The patterns are the ones our ensemble
    draws for the same seed (the challenge's are shared by a batch), so the labels
    can be compared.
    """
    import tensorflow as tf

    from defense.ensemble import RandomizedEnsemble
    from defense.randomized_defense import pattern_scores

    if config.per_image:
        raise ValueError("the entry's loop draws one pattern per batch")
    out = config.out_size
    scalar = tf.TensorSpec([], tf.int32)

    def forward_of(batch_size: int):
        @tf.function(
            input_signature=[
                tf.TensorSpec([batch_size, 299, 299, 3], tf.float32),
                scalar,
                scalar,
                scalar,
                tf.TensorSpec([], tf.bool),
            ]
        )
        def forward(batch, size, top, left, flip):
            batch = tf.cond(flip, lambda: tf.reverse(batch, axis=[2]), lambda: batch)
            resized = tf.raw_ops.ResizeNearestNeighbor(
                images=batch,
                size=tf.stack([size, size]),
                align_corners=False,
                half_pixel_centers=False,
            )
            padding = [[0, 0], [top, out - size - top], [left, out - size - left], [0, 0]]
            padded = tf.ensure_shape(tf.pad(resized, padding), [batch_size, out, out, 3])
            return pattern_scores(model(padded, training=False), config.aux_weight)

        return forward

    forwards = {len(batch): forward_of(len(batch)) for batch in batches(images)}
    drawer = RandomizedEnsemble(model, config, seed=FLAGS.seed)

    def run(batch: np.ndarray, iterations: int) -> np.ndarray:
        patterns = drawer.draw_patterns(len(batch))
        forward, total = forwards[len(batch)], None
        for iteration in range(iterations):
            first = iteration * len(batch)
            size, top, left, flip = (field[first] for field in patterns)
            scores = forward(tf.constant(batch), size, top, left, flip).numpy()
            total = scores.astype(np.float64) if total is None else total + scores
        return np.argmax(total, axis=1)

    for batch in batches(images):
        run(batch, iterations=1)
    drawer.generator.reset_from_seed(FLAGS.seed)
    start = time.perf_counter()
    labels = np.concatenate([run(batch, config.num_iterations) for batch in batches(images)])
    return (time.perf_counter() - start) / len(images), labels


def competition_line(seconds_per_image: float, patterns: int) -> str:
    """One competition batch at the challenge's 30 patterns per image, scaled from a run
    of `patterns` per image (the time is linear in the patterns evaluated)."""
    from defense.config import load_config

    challenge = load_config("challenge").num_iterations
    projected = COMPETITION_BATCH * seconds_per_image * challenge / patterns
    within = "within" if projected <= COMPETITION_BUDGET_S else "OVER"
    scaled = f", scaled from {patterns}" if patterns != challenge else ""
    return (
        f"{projected:.0f} s for {COMPETITION_BATCH} images at {challenge} patterns"
        f"{scaled}: {within} the {COMPETITION_BUDGET_S:.0f} s budget"
    )


@functools.cache
def trained_digits():
    """The tests' digits CNN, trained once per run (None, said so, without scikit-learn)."""
    use_test_models()
    try:
        from support.digits import DEFENSE, train
    except ImportError as error:
        report("digits CNN", f"not measured: {error} (pip install -e '.[dev]' for scikit-learn)")
        return None
    start = time.perf_counter()
    digits = train()
    report(
        "digits CNN",
        f"trained in {time.perf_counter() - start:.0f} s, "
        f"{DEFENSE.num_iterations} patterns per image",
    )
    return digits


def digits_bfloat16_agreement() -> None:
    """On the trained digits CNN: bfloat16's labels against float32's (same seed, same
    patterns), beside two float32 runs with different seeds (the defense's own
    randomness), so that bfloat16's disagreement has a scale."""
    import keras

    digits = trained_digits()
    if digits is None:
        return
    from support.digits import DEFENSE, build_model

    from defense.ensemble import RandomizedEnsemble
    from defense.models import POLICIES

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES["bfloat16"])
    try:
        model16 = build_model()
    finally:
        keras.config.set_dtype_policy(previous)
    model16.set_weights(digits.model.get_weights())

    def labels(model, seed: int) -> np.ndarray:
        ensemble = RandomizedEnsemble(model, DEFENSE, seed=seed, chunk_size=FLAGS.chunk_size)
        return np.concatenate([ensemble.predict(batch) for batch in batches(digits.x_test)])

    float32 = labels(digits.model, FLAGS.seed)
    count = len(float32)
    bfloat16 = np.mean(labels(model16, FLAGS.seed) == float32)
    reseeded = np.mean(labels(digits.model, FLAGS.seed + 1) == float32)
    report(
        "  digits CNN labels",
        f"bfloat16 vs float32 (same seed): {bfloat16:.1%} of {count} agree; float32 vs "
        f"float32 (seeds {FLAGS.seed} and {FLAGS.seed + 1}): {reseeded:.1%}",
    )


def digits_saving() -> dict[str, float]:
    """Early exit's pattern saving on the trained digits CNN: clean and FGSM-16 test images.

    The runner's batching (--batch_size images, --chunk_size patterns per pass, the
    digits' 30 patterns); labels checked against the exhaustive run. Returns the
    saving factor (patterns drawn / evaluated) per input kind.
    """
    import tensorflow as tf

    digits = trained_digits()
    if digits is None:
        return {}
    from support.digits import DEFENSE

    from attacks.fgsm import FGSM
    from defense.ensemble import RandomizedEnsemble

    clean = digits.x_test
    labels = tf.constant(digits.y_test)
    fgsm = FGSM(epsilon=16.0)(
        lambda x: digits.model(x)["logits"], tf.constant(clean), labels
    ).numpy()
    savings = {}
    for kind, images in (("clean", clean), ("FGSM-16", fgsm)):
        outcome = {}
        for early_exit in (False, True):
            ensemble = RandomizedEnsemble(
                digits.model,
                DEFENSE,
                seed=FLAGS.seed,
                chunk_size=FLAGS.chunk_size,
                early_exit=early_exit,
            )
            predicted = np.concatenate([ensemble.predict(batch) for batch in batches(images)])
            outcome[early_exit] = (predicted, ensemble.patterns_evaluated / len(images))
        same = np.array_equal(outcome[True][0], outcome[False][0])
        per_image = outcome[True][1]
        savings[kind] = DEFENSE.num_iterations / per_image
        accuracy = float(np.mean(outcome[True][0] == digits.y_test))
        report(
            f"  {kind} ({len(images)} images)",
            f"{per_image:.1f} of {DEFENSE.num_iterations} patterns per image: "
            f"{savings[kind]:.2f} x fewer; labels "
            f"{'identical to' if same else 'DIFFER from'} the exhaustive run's; "
            f"defense accuracy {accuracy:.1%}",
        )
    return savings


def defense_benchmark() -> None:
    import tensorflow as tf

    from attacks.benchmark.cost import forward_flops
    from defense import models
    from defense.config import load_config

    config = load_config("challenge").replace(num_iterations=FLAGS.num_iterations)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    images = smooth_images(FLAGS.images, FLAGS.seed)
    gflop = forward_flops(models.build(FLAGS.model, input_size=config.out_size)) / 1e9
    work = gflop * config.num_iterations
    report("device", f"{device}; {FLAGS.model}, {gflop:.2f} GFLOP per {config.out_size}px pattern")
    report(
        "workload",
        f"{FLAGS.images} images in batches of {FLAGS.batch_size}, {config.num_iterations} "
        f"challenge patterns each, chunks of {FLAGS.chunk_size}, generated weights, float32",
    )
    peak = matmul_peak("float32")
    report("float32 matmul peak", f"{peak:.1f} GFLOP/s")
    model = build_model(FLAGS.model, "float32")

    baseline = None
    if FLAGS.baseline:
        baseline, baseline_labels = time_baseline(model, config, images)
        report(
            "baseline (the entry's loop)",
            f"{baseline * FLAGS.images:.1f} s, {work / baseline:.1f} GFLOP/s = "
            f"{work / baseline / peak:.2f} x peak",
        )
        report("  one competition batch", competition_line(baseline, config.num_iterations))

    variants = [
        ("ours, exhaustive", {"early_exit": False}),
        ("ours, early exit", {"early_exit": True}),
    ]
    if FLAGS.xla:
        variants += [
            ("ours, exhaustive, XLA", {"early_exit": False, "jit_compile": True}),
            ("ours, early exit, XLA", {"early_exit": True, "jit_compile": True}),
        ]
    exhaustive_labels, results = None, {}
    for name, options in variants:
        seconds, labels, per_image = time_ensemble(make_ensemble(model, config, **options), images)
        results[name] = seconds
        if exhaustive_labels is None:
            exhaustive_labels = labels
        line = f"{seconds * FLAGS.images:.1f} s, {per_image:.1f} patterns per image"
        if not options["early_exit"]:
            line += f", {work / seconds:.1f} GFLOP/s = {work / seconds / peak:.2f} x peak"
        report(name, line)
        if baseline is not None:
            report("  vs baseline", f"{baseline / seconds:.2f} x as fast")
        report(
            "  labels",
            "identical to ours, exhaustive"
            if np.array_equal(labels, exhaustive_labels)
            else "DIFFER from ours, exhaustive",
        )
        report("  one competition batch", competition_line(seconds, config.num_iterations))
    if baseline is not None:
        agree = np.mean(baseline_labels == exhaustive_labels)
        report("baseline labels", f"{agree:.0%} of {FLAGS.images} agree with ours (same patterns)")

    ours = results["ours, exhaustive"]
    met = "met" if work / ours / peak >= PEAK_TARGET else "NOT met"
    report("target: exhaustive >= 0.90 peak", met)
    if baseline is not None:
        report("target: exhaustive > baseline", "met" if ours < baseline else "NOT met")
    generated_saving = ours / results["ours, early exit"]
    report(
        "early exit, generated weights",
        f"{generated_saving:.2f} x faster than exhaustive "
        "(flat scores: not a trained model's saving)",
    )

    if FLAGS.digits:
        savings = digits_saving()
        if savings and baseline is not None:
            ratio = baseline / ours
            for kind, saving in savings.items():
                projected = ratio * saving
                report(
                    f"projection for IRv2, {kind}",
                    f"{ratio:.2f} x (exhaustive vs baseline) x {saving:.2f} x (digits saving) = "
                    f"{projected:.2f} x the baseline; one competition batch "
                    + competition_line(ours / saving, config.num_iterations).split(" for ")[0],
                )
            met = "met" if ratio * savings["clean"] >= SPEED_TARGET else "NOT met"
            report("target: >= 2x baseline (clean)", f"{met} (projection)")

    if FLAGS.bfloat16 or (FLAGS.bfloat16 is None and cpu_flags() & set(BF16_UNITS)):
        report("bfloat16 matmul peak", f"{matmul_peak('bfloat16'):.1f} GFLOP/s")
        ensemble16 = make_ensemble(build_model(FLAGS.model, "bfloat16"), config, early_exit=False)
        ours16, labels16, _ = time_ensemble(ensemble16, images)
        report("ours, bfloat16", f"{ours / ours16:.2f} x float32's speed")
        agreement = float(np.mean(labels16 == exhaustive_labels))
        report(
            "  label agreement",
            f"{agreement:.1%} of {len(images)} images agree with float32 (generated weights)",
        )
        if FLAGS.digits:
            digits_bfloat16_agreement()
    gpu_figures(config, images)


def gpu_figures(config, images: np.ndarray) -> None:
    """Per GPU and precision: pattern-forwards/s of our ensemble and one competition batch.

    Labels are compared with float32 on the same GPU (same seed, same patterns).
    """
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        report("GPU figures", "not measured: TensorFlow sees no GPU")
        return
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    for gpu in gpus:
        device = gpu.name.removeprefix("/device:")
        labels32 = None
        for precision in GPU_PRECISIONS:
            with tf.device(gpu.name):
                model = build_model(FLAGS.model, precision)
                ensemble = make_ensemble(model, config, early_exit=False)
                seconds, labels, _ = time_ensemble(ensemble, images)
            kind = f"{precision} (TF32 on)" if precision == "float32" and tf32 else precision
            report(f"{device}, {kind}", f"{config.num_iterations / seconds:.1f} pattern-forwards/s")
            report("  one competition batch", competition_line(seconds, config.num_iterations))
            if labels32 is None:
                labels32 = labels
            else:
                agreement = float(np.mean(labels == labels32))
                report(
                    "  label agreement",
                    f"{agreement:.1%} of {len(images)} images agree with float32",
                )


def attacks_benchmark() -> None:
    """The batched attacks against their un-batched equivalents, on the trained digits CNN."""
    import tensorflow as tf

    use_test_models()
    from support.digits import DEFENSE, train

    from attacks.benchmark.speed import (
        compare_carlini_wagner,
        compare_deepfool,
        compare_eot_gradient,
    )
    from defense.randomized_defense import RandomizedDefense

    digits = train()
    images = tf.constant(digits.x_test[: FLAGS.batch_size])
    labels = tf.constant(digits.y_test[: FLAGS.batch_size])
    report(
        "model",
        f"the trained digits CNN (32 px, {DEFENSE.out_size} px canvas), batch {FLAGS.batch_size}",
    )

    def logits(x):
        return digits.model(x)["logits"]

    defense = RandomizedDefense(digits.model, DEFENSE, chunk_size=FLAGS.chunk_size, seed=FLAGS.seed)
    comparisons = [
        (
            compare_eot_gradient(defense, images, labels, samples=FLAGS.num_iterations),
            ATTACK_TARGET,
        ),
        (compare_deepfool(logits, images), ATTACK_TARGET),
        (compare_carlini_wagner(logits, images, labels, max_iterations=100), None),
    ]
    for comparison, target in comparisons:
        report(
            comparison.name,
            f"batched {comparison.batched_s:.2f} s, looped {comparison.looped_s:.2f} s: "
            f"{comparison.ratio:.1f} x",
        )
        report("  compared", comparison.detail)
        if target is not None:
            report(
                "  target",
                f">= {target:.0f} x: {'met' if comparison.ratio >= target else 'NOT met'}",
            )


def memory_benchmark() -> None:
    """Peak RSS of `run_defense` (a child process each) on a generated checkpoint, per image count.

    The checkpoint is the tests' slim-format Inception-ResNet-v2 one.
    """
    from PIL import Image

    use_test_models()
    from support.slim_reference.checkpoint_writer import deterministic_values, write_checkpoint
    from support.slim_reference.inception_resnet_v2 import variable_shapes

    counts = sorted(int(count) for count in FLAGS.memory_images)
    report(
        "runner",
        f"run_defense, ens_adv_inception_resnet_v2, batch {FLAGS.batch_size}, "
        f"{FLAGS.num_iterations} patterns, chunk {FLAGS.chunk_size}, generated checkpoint",
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        checkpoint = write_checkpoint(
            folder / "model.ckpt", deterministic_values(variable_shapes())
        )
        pixels = ((smooth_images(max(counts), FLAGS.seed) + 1) * 127.5).round().astype(np.uint8)
        for count in counts:
            inputs = folder / f"images_{count}"
            inputs.mkdir()
            for i in range(count):
                Image.fromarray(pixels[i]).save(inputs / f"{i:04d}.png")
            command = [
                sys.executable,
                str(REPO / "scripts" / "run_defense.py"),
                "--noprogress",
                f"--input_dir={inputs}",
                f"--output_file={folder / f'{count}.csv'}",
                f"--checkpoint_path={checkpoint}",
                f"--batch_size={FLAGS.batch_size}",
                f"--num_iterations={FLAGS.num_iterations}",
                f"--chunk_size={FLAGS.chunk_size}",
                f"--seed={FLAGS.seed}",
            ]
            # Each count in its own grandchild, so RUSAGE_CHILDREN's peak is that run's.
            start = time.perf_counter()
            peak_kib = child_peak_rss(command)
            seconds = time.perf_counter() - start
            report(f"  {count} images", f"peak RSS {peak_kib / 1024:.0f} MiB, {seconds:.0f} s")


def child_peak_rss(command: list[str]) -> int:
    """Peak RSS in KiB of `command`, run to success in a fresh intermediate process."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
    return int(result.stdout.split()[-1])


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    describe_machine()
    if FLAGS.attacks:
        attacks_benchmark()
    elif FLAGS.memory:
        memory_benchmark()
    else:
        defense_benchmark()


if __name__ == "__main__":
    app.run(main)
