"""The small stand-ins of the unit tests, built one way: a classifier and a defense config.

A convolution, a global average pool and dense logits (and aux logits): the output
dict of the registry's models, any input size, weights fixed by the seed. The
defense scaled down to 12x12 images on a 16x16 canvas (flips and an aux weight as
the challenge's) goes with it.
"""

from __future__ import annotations

import keras

from defense.config import DefenseConfig

TINY_DEFENSE = DefenseConfig(
    name="tiny",
    low=12,
    high=16,
    out_size=16,
    num_iterations=8,
    flip_probability=0.5,
    aux_weight=0.4,
)


def tiny_classifier(
    classes: int,
    *,
    kernel: int,
    strides: int = 1,
    filters: int = 8,
    aux: bool = True,
    logits_stddev: float | None = None,
    input_size: int | None = None,
    seed: int = 0,
) -> keras.Model:
    """`{"logits"[, "aux_logits"]}` of `classes` each; `logits_stddev` spreads the logits
    (a 1001-way head with default weights gives nearly uniform scores)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, 3))
    features = keras.layers.Conv2D(filters, kernel, strides=strides, activation="relu")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(features)
    initializer = (
        keras.initializers.RandomNormal(0, logits_stddev) if logits_stddev else "glorot_uniform"
    )
    outputs = {"logits": keras.layers.Dense(classes, kernel_initializer=initializer)(features)}
    if aux:
        outputs["aux_logits"] = keras.layers.Dense(classes)(features)
    return keras.Model(inputs, outputs)
