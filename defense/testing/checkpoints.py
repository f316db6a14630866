"""Slim-format (TF1 name-based, V2) checkpoints of generated weights, for where the real
checkpoint is absent: the GPU job's entry-point run and the benchmark's memory run.

The names and shapes are those the package's Keras model of a registry entry consumes
(`defense.models.expected_shapes`), the values `weights.synthetic_value`'s, so the
checkpoint loads with `defense.models.load` like the real one; its labels mean nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from defense.testing.weights import synthetic_value

DEFAULT_MODEL = "ens_adv_inception_resnet_v2"


def write_checkpoint(prefix: str | os.PathLike, values: Mapping[str, np.ndarray]) -> str:
    """Write `values` as a TF1 name-based checkpoint (`prefix.index`, `prefix.data-00000-of-00001`).

    `SaveV2` is the op TF1's `tf.train.Saver` (and so slim) used, so the files have
    exactly the layout of the official slim checkpoints. Returns the prefix.
    """
    names = list(values)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(values[name]) for name in names],
    )
    return str(prefix)


def generated_values(model: str = DEFAULT_MODEL, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic values of every slim variable that registry model `model` consumes."""
    from defense.models import expected_shapes

    return {
        name: synthetic_value(name, shape, seed) for name, shape in expected_shapes(model).items()
    }


def write_generated_checkpoint(
    prefix: str | os.PathLike, model: str = DEFAULT_MODEL, seed: int = 0
) -> str:
    """Write a checkpoint of `generated_values(model, seed)` at `prefix`; return the prefix."""
    return write_checkpoint(prefix, generated_values(model, seed))
