"""One way to load a defended model: a registry classifier assigned strictly from its slim
checkpoint, with the defense config it runs under.

Every command loads through `load_defended`, so the default checkpoint location, a
checkpoint's errors (with how to get the weights) and the config's resolution are the
same everywhere. Errors name the Python parameters; the commands say them as flags.
Importing this module imports no TensorFlow; loading does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from defense.common.cli import default_checkpoint
from defense.common.errors import ParameterError

if TYPE_CHECKING:
    import keras

    from defense.config import DefenseConfig
    from defense.models import ModelSpec


@dataclass(frozen=True)
class Defended:
    """A loaded classifier with what it was loaded as: its registry entry, the defense
    config it runs under and the checkpoint its weights came from."""

    model: keras.Model
    spec: ModelSpec
    config: DefenseConfig
    checkpoint: str


def _spec(model: str | ModelSpec) -> ModelSpec:
    """The registry entry of a model name (or the entry itself)."""
    from defense.models import get_spec

    if not isinstance(model, str):
        return model
    try:
        return get_spec(model)
    except ValueError as error:
        raise ParameterError(str(error), "model") from error


def _config(config: str | DefenseConfig) -> DefenseConfig:
    """A config given by shipped name or .json path, loaded (a `DefenseConfig` as it is)."""
    from defense.config import DefenseConfig, load_config

    if isinstance(config, DefenseConfig):
        return config
    try:
        return load_config(config)
    except ValueError as error:
        raise ParameterError(str(error), "config") from error


def checkpoint_location(
    model: str | ModelSpec,
    checkpoint_path: str | os.PathLike[str] | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Where `model`'s slim checkpoint is: `checkpoint_path` as given, else the registry's
    file name in `checkpoint_dir`, else in the default checkpoint directory
    ($DEFENSE_CHECKPOINT_DIR, else ./checkpoints)."""
    spec = _spec(model)
    if checkpoint_path is not None and checkpoint_dir is not None:
        raise ParameterError(
            "give checkpoint_path or checkpoint_dir, not both", "checkpoint_path", "checkpoint_dir"
        )
    if checkpoint_path is not None:
        return os.fspath(checkpoint_path)
    if checkpoint_dir is not None:
        return str(Path(checkpoint_dir) / spec.checkpoint_file)
    return str(default_checkpoint(spec.checkpoint_file))


def load_defended(
    model: str | ModelSpec,
    checkpoint_path: str | os.PathLike[str] | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    config: str | DefenseConfig = "none",
    precision: str = "float32",
    fixed_size: bool = False,
    **options: Any,
) -> Defended:
    """Registry model `model` assigned strictly from its slim checkpoint (located as
    `checkpoint_location` says), to run under `config`: a shipped config's name, a .json
    path or a `DefenseConfig` ("none", the default, is the plain classifier).

    `fixed_size` builds for the one size the classifier sees under the config (its
    canvas), so that a config the model cannot take fails (`ValueError`) before any
    weight is read; otherwise the model takes any size. `precision` ("float32",
    "bfloat16", "float16") and `options` (such as `aux_head`) are the build's.
    Bad arguments raise `ParameterError` naming them, before the checkpoint is opened; a
    missing or unfit checkpoint raises `CheckpointError`, saying how to get the weights.
    """
    from defense import models

    spec = _spec(model)
    resolved = _config(config)
    if precision not in models.PRECISIONS:
        raise ParameterError(
            f"precision must be one of {', '.join(models.PRECISIONS)}, got {precision!r}",
            "precision",
        )
    spec.check_options(options)
    if fixed_size and "input_size" in options:
        raise ParameterError("give fixed_size or input_size, not both", "fixed_size", "input_size")
    checkpoint = checkpoint_location(spec, checkpoint_path, checkpoint_dir=checkpoint_dir)
    if fixed_size:
        options["input_size"] = resolved.model_input_size(spec.default_image_size)
    loaded = models.load(spec.name, checkpoint, precision=precision, **options)
    return Defended(model=loaded, spec=spec, config=resolved, checkpoint=checkpoint)


__all__ = ["Defended", "checkpoint_location", "load_defended"]
