"""Keras building blocks that carry TF-Slim variable scopes in their layer names.

Every weighted layer is named after its slim scope ('/' becomes '.', which Keras
allows in layer names), so the slim variable name of each Keras weight follows
from the layer alone. That makes name-based, strict checkpoint loading possible
without any order-based bookkeeping.
"""

from __future__ import annotations

import keras
from keras import layers

SCOPE_SEPARATOR = "."

# Keras weight name -> slim variable suffix.
_SLIM_SUFFIX = {
    "kernel": "weights",
    "bias": "biases",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
}


def layer_name(scope: str) -> str:
    """Keras layer name for a slim scope."""
    return scope.replace("/", SCOPE_SEPARATOR)


def scope_of(layer: keras.layers.Layer) -> str:
    """Slim scope encoded in a layer name."""
    return layer.name.replace(SCOPE_SEPARATOR, "/")


def conv(
    x: keras.KerasTensor,
    filters: int,
    kernel: int | tuple[int, int],
    scope: str,
    *,
    strides: int = 1,
    padding: str = "same",
    batch_norm: bool = True,
    bn_scale: bool = False,
    bn_epsilon: float = 1e-3,
    bn_scope: str = "BatchNorm",
    activation: str | None = "relu",
) -> keras.KerasTensor:
    """slim.conv2d: convolution, optional batch norm (no bias then), optional activation."""
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        name=layer_name(scope),
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(
            epsilon=bn_epsilon, scale=bn_scale, name=layer_name(f"{scope}/{bn_scope}")
        )(x)
    if activation:
        x = layers.Activation(activation, name=layer_name(f"{scope}/{activation}"))(x)
    return x


def fully_connected(x: keras.KerasTensor, units: int, scope: str) -> keras.KerasTensor:
    """slim.fully_connected without activation (a 2-D `weights` matrix and `biases`).

    Always computed in float32: classifier outputs stay float32 under mixed precision.
    """
    return layers.Dense(units, dtype="float32", name=layer_name(scope))(x)


def slim_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Map each slim variable name to the Keras weight that holds it."""
    variables: dict[str, keras.Variable] = {}
    for layer in model.layers:
        for weight in layer.weights:
            suffix = _SLIM_SUFFIX.get(weight.name)
            if suffix is None:
                raise ValueError(
                    f"layer {layer.name!r} has a weight {weight.name!r} with no slim name"
                )
            name = f"{scope_of(layer)}/{suffix}"
            if name in variables:
                raise ValueError(f"two Keras weights claim the slim name {name!r}")
            variables[name] = weight
    return variables


def batch_norm(
    x: keras.KerasTensor,
    scope: str,
    *,
    scale: bool,
    epsilon: float,
    activation: str | None = "relu",
) -> keras.KerasTensor:
    """slim.batch_norm on its own (no conv), its variables directly under `scope`.

    ResNet-v2's `preact` and `postnorm` norms are such standalone layers.
    """
    x = layers.BatchNormalization(epsilon=epsilon, scale=scale, name=layer_name(scope))(x)
    if activation:
        x = layers.Activation(activation, name=layer_name(f"{scope}/{activation}"))(x)
    return x
