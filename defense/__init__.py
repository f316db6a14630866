"""The randomization defense (Xie et al., ICLR 2018): random resizing and zero-padding in
front of slim classifiers loaded from their original checkpoints.

What a user may import is listed in `__all__` and loaded on first use, so that
`import defense` (and every command's `--help`) does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` loading `name` from module `exports[name]` on first use
    (the module itself where `exports[name]` is the subpackage `package.name`)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if module.__name__ == f"{package}.{name}" else getattr(module, name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value
        return value

    return __getattr__


_EXPORTS = {
    "DefenseConfig": "defense.config",
    "load_config": "defense.config",
    "available_configs": "defense.config",
    "RandomizedEnsemble": "defense.ensemble",
    "pattern_scores": "defense.randomized_defense",
    "pattern_losses": "defense.randomized_defense",
    "RandomizedDefense": "defense.randomized_defense",
    "Pattern": "defense.randomization",
    "RandomResizePad": "defense.layers",
    "apply_patterns": "defense.randomization",
    "make_generator": "defense.randomization",
    "resize_and_pad": "defense.randomization",
    "sample_patterns": "defense.randomization",
    "draw_patterns": "defense.patterns",
    "outputs_through": "defense.patterns",
    "outputs_through_config": "defense.patterns",
    "mirrored_strategy": "defense.distribute",
    "NoGPUError": "defense.distribute",
    "classify_directory": "defense.runner",
    "class_names": "defense.labels",
    "models": "defense.models",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
