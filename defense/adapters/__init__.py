"""The defense inside other attack and evaluation suites: ART, foolbox and robustml.

- `art_classifier` (`defense.adapters.art`): an ART `TensorFlowV2Classifier` whose
  preprocessing defence is the randomization, with an EoT variant, so ART's gradient
  attacks go through the random patterns. Inputs in [-1, 1], slim labels.
- `foolbox_model`, `foolbox_eot_model` (`defense.adapters.foolbox`): a foolbox
  `TensorFlowModel` of the defense with one fresh pattern per call, and the same
  inside foolbox's `ExpectationOverTransformationWrapper`. Inputs in `bounds`.
- `RobustMLModel` (`defense.adapters.robustml`): the full defense as a
  `robustml.model.Model`: [0, 1] images, labels of the robustml dataset (ImageNet
  0..999 for slim models, slim label - 1).

Each is loaded on first use, so `import defense.adapters` imports neither
TensorFlow nor any of the three libraries (they are the `interop` extra).
"""

from __future__ import annotations

from typing import Any

from defense.common.exports import lazy_exports

_EXPORTS = {
    "RandomizationPreprocessor": "defense.adapters.art",
    "EoTRandomizationPreprocessor": "defense.adapters.art",
    "art_classifier": "defense.adapters.art",
    "foolbox_model": "defense.adapters.foolbox",
    "foolbox_eot_model": "defense.adapters.foolbox",
    "RobustMLModel": "defense.adapters.robustml",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


def logits_width(model: Any) -> int:
    """The number of columns of a Keras `model`'s "logits" output (1001 for slim models)."""
    outputs = model.output
    if not isinstance(outputs, dict) or "logits" not in outputs:
        raise ValueError("model must be a Keras model with a 'logits' output in a dict")
    return int(outputs["logits"].shape[-1])
