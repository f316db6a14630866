"""The defense as a foolbox 3 model (foolbox 3.3.4, bethgelab/foolbox).

`foolbox_model` is a `foolbox.TensorFlowModel` of `RandomizedDefense` with one
fresh pattern per call (shared by the batch or, with `config.per_image`, one per
image, as the defense draws them): an attack on it sees a new random draw at every
forward pass. `foolbox_eot_model` wraps it in foolbox's
`ExpectationOverTransformationWrapper`, which averages the outputs of `samples`
such calls, so foolbox's gradient attacks (`LinfPGD`, ...) follow the EOT gradient.

Inputs are images within `bounds` ((-1, 1), the models' own range, by default; (0,
1) and (0, 255) work too): foolbox's preprocessing maps them affinely onto [-1, 1]
before the resize and the zero padding, so the padding is the defense's (0 in
[-1, 1], gray). Outputs are logits in the model's label space, the log of the
defense's per-pattern score `softmax(logits) + aux_weight * softmax(aux_logits)`
(for slim models 1001 columns: slim labels, ImageNet 0..999 + 1).
"""

from __future__ import annotations

import math
import os

# foolbox imports GitPython, which refuses to import without a `git` binary (as in the
# container) unless told to stay quiet; git itself is never used here.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import foolbox
import keras
import tensorflow as tf

from defense.config import DefenseConfig
from defense.randomized_defense import RandomizedDefense


def foolbox_model(
    model: keras.Model,
    config: DefenseConfig,
    *,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int | None = None,
) -> foolbox.TensorFlowModel:
    """`model` behind the randomization of `config`, one fresh pattern per call, for foolbox.

    Patterns come from a generator seeded with `seed`, or (default) from OS entropy.
    """
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"bounds must be finite (low, high) with low < high, got {bounds}")
    defense = RandomizedDefense(model, config, num_iterations=1, output="log_scores", seed=seed)
    # One trace per batch shape: the defense needs a static batch size.
    logits = tf.function(lambda images: defense(images))
    return foolbox.TensorFlowModel(
        logits,
        bounds=(low, high),
        preprocessing={"mean": (low + high) / 2, "std": (high - low) / 2},
    )


def foolbox_eot_model(
    model: keras.Model,
    config: DefenseConfig,
    *,
    samples: int,
    bounds: tuple[float, float] = (-1.0, 1.0),
    seed: int | None = None,
) -> foolbox.models.ExpectationOverTransformationWrapper:
    """`foolbox_model` averaged over `samples` calls (fresh patterns each), for EOT attacks.

    foolbox averages the logits of the calls: attacks follow the gradient of their
    loss on the mean logits.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    return foolbox.models.ExpectationOverTransformationWrapper(
        foolbox_model(model, config, bounds=bounds, seed=seed), n_steps=samples
    )
