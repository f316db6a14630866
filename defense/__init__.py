"""The randomization defense (Xie et al., ICLR 2018): random resizing and zero-padding in
front of slim classifiers loaded from their original checkpoints.

What a user may import is listed in `__all__` and loaded on first use, so that
`import defense` (and every command's `--help`) does not import TensorFlow.
"""

from __future__ import annotations

from defense.common.exports import lazy_exports

_EXPORTS = {
    "DefenseConfig": "defense.config",
    "load_config": "defense.config",
    "available_configs": "defense.config",
    "RandomizedEnsemble": "defense.ensemble",
    "pattern_scores": "defense.randomized_defense",
    "pattern_losses": "defense.randomized_defense",
    "RandomizedDefense": "defense.randomized_defense",
    "Pattern": "defense.patterns",
    "RandomResizePad": "defense.layers",
    "apply_patterns": "defense.patterns",
    "make_generator": "defense.patterns",
    "resize_and_pad": "defense.randomization",
    "sample_patterns": "defense.patterns",
    "draw_patterns": "defense.patterns",
    "outputs_through": "defense.patterns",
    "outputs_through_config": "defense.patterns",
    "mirrored_strategy": "defense.distribute",
    "NoGPUError": "defense.distribute",
    "classify_directory": "defense.classify",
    "class_names": "defense.labels",
    "models": "defense.models",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
