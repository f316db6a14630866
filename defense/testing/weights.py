"""Deterministic stand-in weights, for benchmarks where the real checkpoint is absent.

Zero-mean filters with variance (2*pi/(pi-1)) / fan_in and mild batch-norm
statistics keep activations at a sane scale and make labels depend on the
image, so speed and precision comparisons exercise realistic numbers. Labels
from these weights mean nothing.
"""

from __future__ import annotations

import zlib

import keras
import numpy as np

from defense.models.slim import slim_variables

_GAIN = 2 * np.pi / (np.pi - 1)


def synthetic_value(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Deterministic value for slim variable `name`, independent of any other variable."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith("/weights"):
        fan_in = int(np.prod(shape[:-1]))
        value = rng.normal(0.0, np.sqrt(_GAIN / fan_in), shape)
        value -= value.mean(axis=tuple(range(len(shape) - 1)), keepdims=True)
    elif name.endswith("moving_variance"):
        value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith("gamma"):
        value = rng.uniform(0.8, 1.2, shape)
    else:
        value = rng.normal(0.0, 0.05, shape)
    return value.astype(np.float32)


def assign_synthetic_weights(model: keras.Model, seed: int = 0) -> None:
    """Fill every slim variable of `model` with its synthetic value."""
    for name, variable in slim_variables(model).items():
        variable.assign(synthetic_value(name, tuple(variable.shape), seed))
