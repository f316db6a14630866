"""The defense as a foolbox 3 model (foolbox 3.3.4, bethgelab/foolbox).

`foolbox_model` is a `foolbox.TensorFlowModel` of `RandomizedDefense` with one
fresh pattern per call (shared by the batch or, with `config.per_image`, one per
image, as the defense draws them): an attack on it sees a new random draw at every
forward pass. `foolbox_eot_model` wraps it in foolbox's
`ExpectationOverTransformationWrapper`, which averages the outputs of `samples`
such calls, so foolbox's gradient attacks (`LinfPGD`, ...) follow the EOT gradient.

Inputs are image batches [N, image_size, image_size, 3] within `bounds` ((-1, 1), the
models' own range, by default; (0, 1) and (0, 255) work too), of any float dtype:
foolbox's preprocessing maps them affinely onto [-1, 1] before the resize and the
zero padding, so the padding is the defense's (0 in [-1, 1], gray). The model
refuses other inputs (`defense.adapters.checks`). Outputs are logits in the model's
label space, the log of the defense's per-pattern score `softmax(logits) +
aux_weight * softmax(aux_logits)` (for slim models 1001 columns: slim labels, ImageNet 0..999 + 1).
"""

from __future__ import annotations

import math
import os

# foolbox imports GitPython, which refuses to import without a `git` binary (as in the
# container) unless told to stay quiet; git itself is never used here.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from typing import Any

import eagerpy as ep
import foolbox
import keras
import tensorflow as tf

from defense.adapters.checks import check_image_size, check_images
from defense.config import DefenseConfig
from defense.randomized_defense import RandomizedDefense


class CheckedTensorFlowModel(foolbox.TensorFlowModel):
    """A `foolbox.TensorFlowModel` that checks its `inputs` before it runs them: a batch
    [N, H, W, 3] of `image_shape` [H, W, 3], finite and within its bounds, any float
    dtype (cast to float32, differentiably)."""

    def __init__(self, model: Any, *, image_shape: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.image_shape = image_shape

    def __call__(self, inputs: Any) -> Any:
        """The model's outputs for `inputs`, checked first (foolbox calls this for every
        forward pass, the EOT wrapper's and the attacks' gradient passes included)."""
        x, restore_type = ep.astensor_(inputs)
        bounds = (self.bounds.lower, self.bounds.upper)
        check_images(x.raw, value_range=bounds, shape=self.image_shape, parameter="inputs")
        x = ep.astensor(tf.cast(x.raw, tf.float32))
        return restore_type(super().__call__(x))


def foolbox_model(
    model: keras.Model,
    config: DefenseConfig,
    *,
    bounds: tuple[float, float] = (-1.0, 1.0),
    image_size: int = 299,
    seed: int | None = None,
) -> CheckedTensorFlowModel:
    """`model` behind the randomization of `config`, one fresh pattern per call, for foolbox.

    It takes image_size x image_size images within `bounds` (`CheckedTensorFlowModel`).
    Patterns come from a generator seeded with `seed`, or (default) from OS entropy.
    """
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"bounds must be finite (low, high) with low < high, got {bounds}")
    check_image_size(
        model,
        config,
        image_size,
        image_size,
        given=f"image_size={image_size}",
        parameter="image_size",
    )
    defense = RandomizedDefense(model, config, num_iterations=1, output="log_scores", seed=seed)
    # One trace per batch shape: the defense needs a static batch size.
    logits = tf.function(lambda images: defense(images))
    return CheckedTensorFlowModel(
        logits,
        image_shape=(image_size, image_size, 3),
        bounds=(low, high),
        preprocessing={"mean": (low + high) / 2, "std": (high - low) / 2},
    )


def foolbox_eot_model(
    model: keras.Model,
    config: DefenseConfig,
    *,
    samples: int,
    bounds: tuple[float, float] = (-1.0, 1.0),
    image_size: int = 299,
    seed: int | None = None,
) -> foolbox.models.ExpectationOverTransformationWrapper:
    """`foolbox_model` averaged over `samples` calls (fresh patterns each), for EOT attacks.

    foolbox averages the logits of the calls: attacks follow the gradient of their
    loss on the mean logits.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    return foolbox.models.ExpectationOverTransformationWrapper(
        foolbox_model(model, config, bounds=bounds, image_size=image_size, seed=seed),
        n_steps=samples,
    )
