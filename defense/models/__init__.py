"""Model zoo: slim classifiers rebuilt in Keras and loaded strictly from slim checkpoints.

`load(name, checkpoint_path)` returns a Keras model mapping float32 NHWC images in
[-1, 1] to `{"logits": [N, 1001], "aux_logits": [N, 1001]}` (aux only where the
slim net has an aux head).
"""

from __future__ import annotations

import os
from typing import Any

import keras

from defense.models.checkpoint import CheckpointError, assign_from_checkpoint, open_checkpoint
from defense.models.registry import REGISTRY, ModelSpec, get_spec
from defense.models.slim import slim_variables

# Compute precision -> Keras dtype policy. The mixed policies keep float32 weights.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
PRECISIONS = tuple(POLICIES)


def build(name: str, *, precision: str = "float32", **options: Any) -> keras.Model:
    """Build registry model `name` with uninitialised weights.

    `precision="bfloat16"` or `"float16"` computes in that type with float32 weights
    (Keras `mixed_bfloat16` / `mixed_float16`; float16 is for GPUs); outputs are
    float32 either way.
    """
    spec = get_spec(name)
    spec.check_options(options)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        model = spec.build(**options)
    except ValueError as error:
        size = options.get("input_size")
        if size is None:
            raise
        raise ValueError(f"{name} cannot take {size}x{size} inputs: {error}") from error
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def expected_shapes(name: str, **options: Any) -> dict[str, tuple[int, ...]]:
    """Slim variable names and shapes that registry model `name` consumes."""
    return {key: tuple(var.shape) for key, var in slim_variables(build(name, **options)).items()}


def load(
    name: str, checkpoint_path: str | os.PathLike, *, precision: str = "float32", **options: Any
) -> keras.Model:
    """Build registry model `name` and assign it strictly from a slim checkpoint."""
    spec = get_spec(name)
    try:
        open_checkpoint(checkpoint_path)
        model = build(name, precision=precision, **options)
        assign_from_checkpoint(slim_variables(model), checkpoint_path, model_name=name)
    except CheckpointError as error:
        raise CheckpointError(f"{error}\n{_how_to_get(spec)}") from error
    return model


def _how_to_get(spec: ModelSpec) -> str:
    return (
        f"The {spec.name} weights are {spec.checkpoint_file} from {spec.url}. "
        f"Get them with `download_checkpoints {spec.name}` (or `python "
        f"scripts/download_checkpoints.py {spec.name}`), or extract the tarball by hand "
        f"into the checkpoint directory."
    )


__all__ = [
    "PRECISIONS",
    "REGISTRY",
    "CheckpointError",
    "ModelSpec",
    "build",
    "expected_shapes",
    "get_spec",
    "load",
]
