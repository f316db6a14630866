"""A run's models: name -> how to load the model, what identifies its weights, the image
and canvas sizes, the defense config and the class names.

The command builds the set from registry names and slim checkpoints (the paper's
four models, 299 -> 331, the `paper` config, slim's 1001 classes); any other
set, such as a small trained test model, comes from a factory function
(`load_factory`). A model is loaded only when one of its cells has to run.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attacks.paper.tables import MODEL_TITLES
from defense.common.errors import ParameterError

if TYPE_CHECKING:
    import keras

    from defense.config import DefenseConfig
    from defense.models import ModelSpec


@dataclass(frozen=True)
class ModelEntry:
    """One model of a run.

    `weights` identifies the weights (a checkpoint digest), so that results of other
    weights are refused; labels are indices of `class_names` from `first_label` on
    (slim: 1..1000, 0 being background); `paper` is the paper's model whose
    numbers this one is compared with (None: not one of the paper's).
    """

    name: str
    load: Callable[[], keras.Model]
    weights: str
    input_size: int
    out_size: int
    config: DefenseConfig
    class_names: Sequence[str]
    first_label: int = 0
    paper: str | None = None
    title: str | None = None

    @property
    def label(self) -> str:
        """The model's column title."""
        return self.title or MODEL_TITLES.get(self.name, self.name)


ModelSet = Mapping[str, ModelEntry]


def registry_models(
    names: Sequence[str], checkpoint_dir: str | os.PathLike, config: DefenseConfig
) -> dict[str, ModelEntry]:
    """Registry models with their slim checkpoints in `checkpoint_dir` (the registry's
    file names); a missing checkpoint raises `CheckpointError` saying how to get it."""
    from defense import models
    from defense.labels import class_names
    from defense.loading import checkpoint_location
    from defense.models.checkpoint import CheckpointError, checkpoint_digest

    if not names:
        raise ParameterError("models: none given", "models")
    entries = {}
    for name in names:
        spec = models.get_spec(name)
        checkpoint = checkpoint_location(spec, checkpoint_dir=checkpoint_dir)
        try:
            weights = checkpoint_digest(checkpoint)
        except (CheckpointError, OSError) as error:
            raise CheckpointError(
                f"{name}: {error}\nGet it with `download_checkpoints {name}`, or give "
                "--checkpoint_dir (the folder holding the slim checkpoints)."
            ) from error
        entries[name] = ModelEntry(
            name=name,
            load=functools.partial(_load_model, spec, checkpoint, config),
            weights=weights,
            input_size=spec.default_image_size,
            out_size=config.out_size,
            config=config,
            class_names=class_names(),
            first_label=1,
            paper=name if name in MODEL_TITLES else None,
        )
    return entries


def _load_model(spec: ModelSpec, checkpoint: str, config: DefenseConfig) -> keras.Model:
    """A registry model's classifier, loaded from its checkpoint (what `ModelEntry.load` calls)."""
    from defense.loading import load_defended

    return load_defended(spec, checkpoint, config=config).model


def load_factory(location: str) -> ModelSet:
    """The model set a `module:function` factory returns (the function takes no arguments)."""
    module_name, colon, function_name = location.partition(":")
    if not (colon and module_name and function_name):
        raise ParameterError(
            f"model_factory must be MODULE:FUNCTION, got {location!r}", "model_factory"
        )
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ParameterError(
            f"model_factory {location!r} cannot be loaded: {error}", "model_factory"
        ) from error
    entries = factory()
    if not entries or not all(isinstance(e, ModelEntry) for e in entries.values()):
        raise ParameterError(
            f"model_factory {location!r} must return a non-empty mapping of ModelEntry",
            "model_factory",
        )
    return dict(entries)


def choose(entries: ModelSet, names: Sequence[str] | None) -> dict[str, ModelEntry]:
    """The entries named (all when None), in the given order."""
    if names is not None and not names:
        raise ParameterError("models: none given", "models")
    if names is None:
        return dict(entries)
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise ParameterError(
            f"unknown model(s) {', '.join(unknown)}; this model set has {', '.join(entries)}",
            "models",
        )
    return {name: entries[name] for name in dict.fromkeys(names)}
