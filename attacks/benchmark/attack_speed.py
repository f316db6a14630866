"""The `attacks` run of the benchmark: `speed`'s batched-vs-looped comparisons on the
trained digits CNN, each against its target ratio where it has one."""

from __future__ import annotations

from attacks.benchmark.machine import report
from attacks.benchmark.options import BenchmarkOptions

ATTACK_TARGET = 5.0


def attacks_benchmark(options: BenchmarkOptions) -> None:
    """The batched attacks against their un-batched equivalents, on the trained digits CNN."""
    import tensorflow as tf

    from attacks.apgd import APGD
    from attacks.benchmark.speed import (
        compare_apgd_eot_step,
        compare_carlini_wagner,
        compare_deepfool,
        compare_eot_gradient,
    )
    from defense.randomized_defense import RandomizedDefense
    from defense.testing.digits import DEFENSE, train

    digits = train()
    images = tf.constant(digits.x_test[: options.batch_size])
    labels = tf.constant(digits.y_test[: options.batch_size])
    report(
        "model",
        f"the trained digits CNN (32 px, {DEFENSE.out_size} px canvas), batch {options.batch_size}",
    )

    def logits(x: tf.Tensor) -> tf.Tensor:
        return digits.model(x)["logits"]

    defense = RandomizedDefense(
        digits.model, DEFENSE, chunk_size=options.chunk_size, seed=options.seed
    )
    comparisons = [
        (
            compare_eot_gradient(defense, images, labels, samples=options.num_iterations),
            ATTACK_TARGET,
        ),
        (compare_apgd_eot_step(defense, images, labels, samples=APGD().samples), None),
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
