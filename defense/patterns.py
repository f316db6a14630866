"""Randomization patterns: what a pattern is, how patterns are sampled and drawn as a
config says, and a model's outputs for images each seen through its pattern.

A *pattern* is (size, top, left, flip): the image (flipped left-right when `flip`)
is resized to size x size and placed at (top, left) on an out_size x out_size
canvas of zeros; `defense.randomization` applies patterns.

The defense (`defense.ensemble`), the scenarios' fixed patterns (`attacks.evaluation.scenarios`)
and EOT-PGD (`attacks.eot`) all see the model this way, so an attack optimises
through exactly what the defense applies.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from defense.config import DefenseConfig, validate_range
from defense.randomization import resize_and_pad


class Pattern(NamedTuple):
    """A randomization pattern: resize to size x size, place at (top, left), flip first.

    The fields are Python numbers for one pattern, or int32/bool tensors of shape [N]
    for one pattern per item (`Pattern.stack` turns fixed patterns into that form).
    """

    size: Any
    top: Any
    left: Any
    flip: Any = False

    @classmethod
    def stack(cls, patterns: Sequence[Pattern]) -> Pattern:
        """Fixed patterns as one batch of [len(patterns)] tensors."""
        return cls(
            *(
                tf.constant([getattr(p, field) for p in patterns], dtype)
                for field, dtype in zip(cls._fields, (tf.int32,) * 3 + (tf.bool,), strict=True)
            )
        )


def make_generator(seed: int | None = None) -> tf.random.Generator:
    """Philox generator: from OS entropy by default, reproducible from `seed` when given."""
    if seed is not None:
        return tf.random.Generator.from_seed(seed)
    state = np.frombuffer(secrets.token_bytes(24), dtype=np.int64)
    return tf.random.Generator.from_state(state, alg="philox")


def sample_patterns(
    generator: tf.random.Generator,
    count: int,
    *,
    low: int,
    high: int,
    out_size: int,
    flip_probability: float = 0.0,
) -> Pattern:
    """Draw `count` patterns: size uniform in [low, high), offsets in [0, out_size - size]."""
    validate_range(low, high, out_size)
    size = generator.uniform([count], minval=low, maxval=high, dtype=tf.int32)
    span = tf.cast(out_size - size + 1, tf.int64)
    offsets = generator.uniform_full_int([2, count], dtype=tf.int64)
    top = tf.cast(tf.math.floormod(offsets[0], span), tf.int32)
    left = tf.cast(tf.math.floormod(offsets[1], span), tf.int32)
    flip = generator.uniform([count]) < flip_probability
    return Pattern(size, top, left, flip)


def apply_patterns(
    images: tf.Tensor | np.ndarray,
    patterns: Pattern,
    *,
    out_size: int = 331,
    method: str = "nearest",
) -> tf.Tensor:
    """`resize_and_pad` with one pattern per image."""
    return resize_and_pad(
        images,
        patterns.size,
        patterns.top,
        patterns.left,
        flip=patterns.flip,
        out_size=out_size,
        method=method,
    )


def draw_patterns(
    generator: tf.random.Generator,
    config: DefenseConfig,
    batch_size: int | tf.Tensor,
    iterations: int,
) -> Pattern:
    """`iterations` patterns per image, pattern-major: [iterations * batch_size] items.

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
