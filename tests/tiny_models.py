"""The small stand-in classifiers of the unit tests, built one way.

A convolution, a global average pool and dense logits (and aux logits): the output
dict of the registry's models, any input size, weights fixed by the seed.
"""

from __future__ import annotations

import keras


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
