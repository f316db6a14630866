"""A model seen through patterns: the patterns a config draws, and the model's outputs
for images each seen through its pattern.

The defense (`defense.ensemble`), the scenarios' fixed patterns (`attacks.scenarios`)
and EOT-PGD (`attacks.eot`) all see the model this way, so an attack optimises
through exactly what the defense applies.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from defense.config import DefenseConfig
from defense.randomization import Pattern, apply_patterns, sample_patterns


def draw_patterns(
    generator: tf.random.Generator,
    config: DefenseConfig,
    batch_size: int | tf.Tensor,
    iterations: int,
) -> Pattern:
    """Patterns of every (iteration, image) item, iteration-major, [iterations * batch_size].

    A fresh pattern per iteration (shared by the batch, as the entry did) or, with
    `config.per_image`, per item; flips with `config.flip_probability`. Without
    randomization the patterns only flip. The generator is used in the same order
    whatever the config, so a seed gives the same stream.
    """
    count = iterations * batch_size if config.per_image else iterations
    if config.randomize:
        patterns = sample_patterns(
            generator,
            count,
            low=config.low,
            high=config.high,
            out_size=config.out_size,
            flip_probability=config.flip_probability,
        )
    else:
        zeros = tf.zeros([count], tf.int32)
        patterns = Pattern(
            zeros, zeros, zeros, generator.uniform([count]) < config.flip_probability
        )
    if not config.per_image:
        patterns = Pattern(*(tf.repeat(field, batch_size) for field in patterns))
    return patterns


def outputs_through(
    model: keras.Model,
    items: tf.Tensor,
    patterns: Pattern,
    *,
    out_size: int,
    method: str = "nearest",
    resize: bool = True,
) -> dict[str, tf.Tensor]:
    """The model's outputs for `items` [N, H, W, 3], item i seen through pattern i.

    With `resize` the item is flipped, resized and padded onto the out_size canvas;
    without (a config that does not randomize) it is only flipped.
    """
    if resize:
        seen = apply_patterns(items, patterns, out_size=out_size, method=method)
    else:
        seen = tf.where(patterns.flip[:, None, None, None], tf.reverse(items, axis=[2]), items)
    return model(seen, training=False)


def outputs_through_config(
    model: keras.Model, items: tf.Tensor, patterns: Pattern, config: DefenseConfig
) -> dict[str, tf.Tensor]:
    """`outputs_through` with the canvas, method and randomization of `config`."""
    return outputs_through(
        model,
        items,
        patterns,
        out_size=config.out_size,
        method=config.method,
        resize=config.randomize,
    )
