"""The randomization defense (Xie et al., ICLR 2018): random resizing and zero-padding in
front of slim classifiers loaded from their original checkpoints.

What a user may import is listed in `__all__` and loaded on first use, so that
`import defense` (and every command's `--help`) does not import TensorFlow.
"""

from __future__ import annotations

from defense.common.exports import lazy_exports

# The model and the defense: load a defended model, classify with it.
_MODEL_AND_DEFENSE = {
    "load_defended": "defense.loading",
    "Defended": "defense.loading",
    "checkpoint_location": "defense.loading",
    "models": "defense.models",
    "DefenseConfig": "defense.config",
    "load_config": "defense.config",
    "available_configs": "defense.config",
    "RandomizedDefense": "defense.randomized_defense",
    "RandomizedEnsemble": "defense.ensemble",
    "classify_directory": "defense.classify",
    "class_names": "defense.labels",
    "mirrored_strategy": "defense.distribute",
    "NoGPUError": "defense.distribute",
}
# The randomization kernels: patterns, sampling and drawing them, applying them.
_RANDOMIZATION = {
    "Pattern": "defense.patterns",
    "make_generator": "defense.patterns",
    "sample_patterns": "defense.patterns",
    "draw_patterns": "defense.patterns",
    "apply_patterns": "defense.patterns",
    "outputs_through": "defense.patterns",
    "outputs_through_config": "defense.patterns",
    "resize_and_pad": "defense.randomization",
    "RandomResizePad": "defense.layers",
    "pattern_scores": "defense.randomized_defense",
    "pattern_losses": "defense.randomized_defense",
}
_EXPORTS = {**_MODEL_AND_DEFENSE, **_RANDOMIZATION}
__all__ = [*_MODEL_AND_DEFENSE, *_RANDOMIZATION]
__getattr__ = lazy_exports(__name__, _EXPORTS)
