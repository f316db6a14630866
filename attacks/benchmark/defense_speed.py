"""The randomized ensemble against the original entry's loop and the machine's peak.

Measured side by side in one run, on deterministic generated weights and the same
image-like inputs:
- the fair baseline: the original entry's loop, one compiled single-pattern
  forward pass of the whole batch (a `tf.function` of fixed shapes, resize and pad
  inside, like the entry's graph), called once per pattern as its `session.run` was;
- ours, exhaustive (every pattern) and with early exit, each also with XLA
  (`xla`): seconds, ratio to the baseline, GFLOP/s against a float32 matmul peak
  measured in the same run, patterns evaluated per image, and the projected time
  of one competition batch (100 images at the challenge's 30 patterns) against its
  500 s budget; all labels compared with the exhaustive run's;
- early exit's pattern saving on the trained digits CNN (clean and FGSM-16 test
  images), and the IRv2 projection: exhaustive ratio x the digits saving (generated
  weights give flat scores, on which the bound rarely fires, so their saving is
  printed but is not what a trained model saves);
- bfloat16 (by default where the CPU has bfloat16 units): its speed ratio, and its
  label agreement with float32 beside that of two float32 runs with different seeds
  on the trained digits CNN; per GPU TensorFlow sees, float32/float16/bfloat16.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from attacks.benchmark.machine import has_bf16_units, matmul_peak, report
from attacks.benchmark.options import BenchmarkOptions
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.testing.digits import Digits

COMPETITION_BATCH = 100
COMPETITION_BUDGET_S = 500.0
PEAK_TARGET = 0.9
SPEED_TARGET = 2.0
GPU_PRECISIONS = ("float32", "float16", "bfloat16")


def smooth_images(count: int, seed: int) -> np.ndarray:
    """Image-like inputs in [-1, 1]: coarse random colour fields upsampled, plus fine noise."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (count, 8, 8, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, [299, 299], "bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), -1, 1).astype(np.float32)


def build_model(name: str, precision: str, seed: int) -> keras.Model:
    """Registry model `name` in `precision`, with the generated weights of `seed`."""
    from defense import models
    from defense.testing.weights import assign_synthetic_weights

    model = models.build(name, precision=precision)
    assign_synthetic_weights(model, seed=seed)
    return model


def batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """`images` in consecutive batches of `batch_size` (the last may be smaller)."""
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def make_ensemble(
    model: keras.Model, config: DefenseConfig, options: BenchmarkOptions, **settings: Any
) -> RandomizedEnsemble:
    """Our ensemble, traced for any batch size before timing (a 2- and a 3-image call)."""
    ensemble = RandomizedEnsemble(
        model, config, seed=options.seed, chunk_size=options.chunk_size, **settings
    )
    warm = smooth_images(3, options.seed + 1)
    ensemble.predict(warm[:2])
    ensemble.predict(warm)
    return ensemble


def time_ensemble(
    ensemble: RandomizedEnsemble, images: np.ndarray, options: BenchmarkOptions
) -> tuple[float, np.ndarray, float]:
    """Seconds per image, labels and mean patterns per image of one pass over `images`."""
    ensemble.generator.reset_from_seed(options.seed)
    evaluated_before = ensemble.patterns_evaluated
    start = time.perf_counter()
    labels = np.concatenate(
        [ensemble.predict(batch) for batch in batches(images, options.batch_size)]
    )
    seconds = (time.perf_counter() - start) / len(images)
    return seconds, labels, (ensemble.patterns_evaluated - evaluated_before) / len(images)


def time_baseline(
    model: keras.Model, config: DefenseConfig, images: np.ndarray, options: BenchmarkOptions
) -> tuple[float, np.ndarray]:
    """Seconds per image and labels of the original entry's loop, with our patterns.

    One `tf.function` of fixed input shapes (the batch, and the pattern as scalars):
    flip, legacy nearest-neighbour resize, zero pad and the network, as the entry's
    graph; called once per pattern per batch, as its `session.run`, the scores summed
    in float64 outside, as its NumPy loop. The patterns are the ones our ensemble
    draws for the same seed (the challenge's are shared by a batch), so the labels
    can be compared.
    """
    import tensorflow as tf

    from defense.randomized_defense import pattern_scores

    if config.per_image:
        raise ValueError("the entry's loop draws one pattern per batch")
    out = config.out_size
    scalar = tf.TensorSpec([], tf.int32)

    def forward_of(batch_size: int) -> Callable[..., tf.Tensor]:
        @tf.function(
            input_signature=[
                tf.TensorSpec([batch_size, 299, 299, 3], tf.float32),
                scalar,
                scalar,
                scalar,
                tf.TensorSpec([], tf.bool),
            ]
        )
        def forward(
            batch: tf.Tensor, size: tf.Tensor, top: tf.Tensor, left: tf.Tensor, flip: tf.Tensor
        ) -> tf.Tensor:
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

    image_batches = batches(images, options.batch_size)
    forwards = {len(batch): forward_of(len(batch)) for batch in image_batches}
    drawer = RandomizedEnsemble(model, config, seed=options.seed)

    def run(batch: np.ndarray, iterations: int) -> np.ndarray:
        patterns = drawer.draw_patterns(len(batch))
        forward, total = forwards[len(batch)], np.zeros(0)
        for iteration in range(iterations):
            first = iteration * len(batch)
            size, top, left, flip = (field[first] for field in patterns)
            scores = forward(tf.constant(batch), size, top, left, flip).numpy()
            total = scores.astype(np.float64) if iteration == 0 else total + scores
        return np.argmax(total, axis=1)

    for batch in image_batches:
        run(batch, iterations=1)
    drawer.generator.reset_from_seed(options.seed)
    start = time.perf_counter()
    labels = np.concatenate([run(batch, config.num_iterations) for batch in image_batches])
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
def trained_digits() -> Digits | None:
    """The digits CNN, trained once per process (None, said so, without scikit-learn)."""
    from defense.testing.digits import DEFENSE, train

    start = time.perf_counter()
    try:
        digits = train()
    except ModuleNotFoundError as error:
        report("digits CNN", f"not measured: {error}")
        return None
    report(
        "digits CNN",
        f"trained in {time.perf_counter() - start:.0f} s, "
        f"{DEFENSE.num_iterations} patterns per image",
    )
    return digits


def digits_bfloat16_agreement(options: BenchmarkOptions) -> None:
    """On the trained digits CNN: bfloat16's labels against float32's (same seed, same
    patterns), beside two float32 runs with different seeds (the defense's own
    randomness), so that bfloat16's disagreement has a scale."""
    from defense.models import POLICIES
    from defense.testing.digits import DEFENSE
    from defense.testing.digits import build_model as build_digits

    digits = trained_digits()
    if digits is None:
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES["bfloat16"])
    try:
        model16 = build_digits()
    finally:
        keras.config.set_dtype_policy(previous)
    model16.set_weights(digits.model.get_weights())

    def labels(model: keras.Model, seed: int) -> np.ndarray:
        ensemble = RandomizedEnsemble(model, DEFENSE, seed=seed, chunk_size=options.chunk_size)
        return np.concatenate(
            [ensemble.predict(batch) for batch in batches(digits.x_test, options.batch_size)]
        )

    seed = options.seed
    float32 = labels(digits.model, seed)
    count = len(float32)
    bfloat16 = np.mean(labels(model16, seed) == float32)
    reseeded = np.mean(labels(digits.model, seed + 1) == float32)
    report(
        "  digits CNN labels",
        f"bfloat16 vs float32 (same seed): {bfloat16:.1%} of {count} agree; float32 vs "
        f"float32 (seeds {seed} and {seed + 1}): {reseeded:.1%}",
    )


def digits_saving(options: BenchmarkOptions) -> dict[str, float]:
    """Early exit's pattern saving on the trained digits CNN: clean and FGSM-16 test images.

    The runner's batching (`batch_size` images, `chunk_size` patterns per pass, the
    digits' 30 patterns); labels checked against the exhaustive run. Returns the
    saving factor (patterns drawn / evaluated) per input kind.
    """
    import tensorflow as tf

    from attacks.fgsm import FGSM
    from defense.testing.digits import DEFENSE

    digits = trained_digits()
    if digits is None:
        return {}
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
                seed=options.seed,
                chunk_size=options.chunk_size,
                early_exit=early_exit,
            )
            predicted = np.concatenate(
                [ensemble.predict(batch) for batch in batches(images, options.batch_size)]
            )
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


def measures_bfloat16(options: BenchmarkOptions) -> bool:
    """bfloat16 is measured when asked for, or by default where the CPU has bf16 units."""
    return options.bfloat16 if options.bfloat16 is not None else has_bf16_units()


def defense_benchmark(options: BenchmarkOptions) -> None:
    """Time the baseline and our ensemble (float32, XLA, early exit, bfloat16, each GPU)."""
    import tensorflow as tf

    from attacks.benchmark.cost import forward_flops
    from defense import models
    from defense.config import load_config

    config = load_config("challenge").replace(num_iterations=options.num_iterations)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    images = smooth_images(options.images, options.seed)
    gflop = forward_flops(models.build(options.model, input_size=config.out_size)) / 1e9
    work = gflop * config.num_iterations
    report(
        "device", f"{device}; {options.model}, {gflop:.2f} GFLOP per {config.out_size}px pattern"
    )
    report(
        "workload",
        f"{options.images} images in batches of {options.batch_size}, {config.num_iterations} "
        f"challenge patterns each, chunks of {options.chunk_size}, generated weights, float32",
    )
    peak = matmul_peak("float32")
    report("float32 matmul peak", f"{peak:.1f} GFLOP/s")
    model = build_model(options.model, "float32", options.seed)

    baseline = None
    if options.baseline:
        baseline, baseline_labels = time_baseline(model, config, images, options)
        report(
            "baseline (the entry's loop)",
            f"{baseline * options.images:.1f} s, {work / baseline:.1f} GFLOP/s = "
            f"{work / baseline / peak:.2f} x peak",
        )
        report("  one competition batch", competition_line(baseline, config.num_iterations))

    variants: list[tuple[str, dict[str, bool]]] = [
        ("ours, exhaustive", {"early_exit": False}),
        ("ours, early exit", {"early_exit": True}),
    ]
    if options.xla:
        variants += [
            ("ours, exhaustive, XLA", {"early_exit": False, "jit_compile": True}),
            ("ours, early exit, XLA", {"early_exit": True, "jit_compile": True}),
        ]
    exhaustive_labels, results = None, {}
    for name, settings in variants:
        ensemble = make_ensemble(model, config, options, **settings)
        seconds, labels, per_image = time_ensemble(ensemble, images, options)
        results[name] = seconds
        if exhaustive_labels is None:
            exhaustive_labels = labels
        line = f"{seconds * options.images:.1f} s, {per_image:.1f} patterns per image"
        if not settings["early_exit"]:
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
        report(
            "baseline labels", f"{agree:.0%} of {options.images} agree with ours (same patterns)"
        )

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

    if options.digits:
        savings = digits_saving(options)
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

    if measures_bfloat16(options):
        report("bfloat16 matmul peak", f"{matmul_peak('bfloat16'):.1f} GFLOP/s")
        model16 = build_model(options.model, "bfloat16", options.seed)
        ensemble16 = make_ensemble(model16, config, options, early_exit=False)
        ours16, labels16, _ = time_ensemble(ensemble16, images, options)
        report("ours, bfloat16", f"{ours / ours16:.2f} x float32's speed")
        agreement = float(np.mean(labels16 == exhaustive_labels))
        report(
            "  label agreement",
            f"{agreement:.1%} of {len(images)} images agree with float32 (generated weights)",
        )
        if options.digits:
            digits_bfloat16_agreement(options)
    gpu_figures(config, images, options)


def gpu_figures(config: DefenseConfig, images: np.ndarray, options: BenchmarkOptions) -> None:
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
                model = build_model(options.model, precision, options.seed)
                ensemble = make_ensemble(model, config, options, early_exit=False)
                seconds, labels, _ = time_ensemble(ensemble, images, options)
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
