"""Deterministic slim-style test weights and TF1 name-based (V2) checkpoints holding them.

The values and (through the reference graph) the names and shapes are the tests' own,
independent of the package's models, which is what the cross-checks need; writing the
files is TensorFlow's `SaveV2`, shared with `defense.testing.checkpoints.write_checkpoint`.

The values are chosen so that a loader bug shows up in the outputs: filters are
zero-mean with variance (2*pi/(pi-1)) / fan_in, which keeps activations at a
sane scale through a deep ReLU net and makes the labels depend on the image;
beta, moving_mean, moving_variance and biases are non-zero and differently
distributed, so exchanging any two of them changes the logits.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

# Re-exported: the tests write their reference values with it.
from defense.testing.checkpoints import write_checkpoint as write_checkpoint

from .inception_resnet_v2 import Getter

FILTER_GAIN = 2 * np.pi / (np.pi - 1)


def deterministic_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Test value of slim variable `name`, a function of its name and shape only."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "weights":
        fan_in = int(np.prod(shape[:-1]))
        value = rng.normal(0.0, np.sqrt(FILTER_GAIN / fan_in), shape)
        value -= value.mean(axis=tuple(range(len(shape) - 1)), keepdims=True)
    elif leaf == "moving_variance":
        value = rng.uniform(0.5, 1.5, shape)
    elif leaf == "moving_mean":
        # Positive, so a mean/variance mix-up gives wrong but finite outputs, not NaN.
        value = rng.uniform(0.02, 0.3, shape)
    elif leaf == "gamma":
        # ResNet-v2 keeps 0.6-1.2 rms activations with this range; [0.8, 1.6] explodes.
        value = rng.uniform(0.8, 1.1, shape)
    elif leaf == "beta":
        value = rng.normal(0.0, 0.1, shape)
    elif leaf == "biases":
        value = rng.normal(0.0, 0.05, shape)
    else:
        raise ValueError(f"no test value rule for {name}")
    return value.astype(np.float32)


def deterministic_values(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Test values for a whole manifest of slim variables."""
    return {name: deterministic_value(name, tuple(shape)) for name, shape in shapes.items()}


Edit = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def unfit_edits(
    missing: str,
    unexpected: str,
    unexpected_shape: tuple[int, ...],
    mis_shaped: str,
    new_shape: tuple[int, ...],
) -> dict[str, tuple[str, Edit]]:
    """The three ways a checkpoint can fail to fit a model, each as (the name the error must
    report, an edit of the checkpoint's values): a variable dropped, one added, one reshaped."""
    return {
        "missing": (missing, lambda v: {k: a for k, a in v.items() if k != missing}),
        "unexpected": (
            unexpected,
            lambda v: {**v, unexpected: np.zeros(unexpected_shape, np.float32)},
        ),
        "mis_shaped": (mis_shaped, lambda v: {**v, mis_shaped: v[mis_shaped].reshape(new_shape)}),
    }


def values_getter(values: Mapping[str, np.ndarray]) -> Getter:
    """`get(name, shape)` reading from an in-memory {name: array} mapping."""
    return lambda name, shape: values[name]


def checkpoint_getter(prefix: str | os.PathLike) -> Getter:
    """`get(name, shape)` reading tensors from a name-based checkpoint."""
    reader = tf.train.load_checkpoint(str(prefix))
    return lambda name, shape: reader.get_tensor(name)
