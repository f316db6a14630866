"""FGSM (Goodfellow et al. 2015) through cleverhans, with the paper's epsilons."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from attacks.catalog import PAPER_EPSILONS

# The paper's FGSM sets (Table 2, PAPER_EPSILONS); one adversarial set, one output
# directory, per epsilon.
__all__ = ["PAPER_EPSILONS", "fgsm"]


def fgsm(
    logits_fn: LogitsFn,
    images: tf.Tensor,
    labels,
    *,
    epsilon: float,
    targeted: bool = False,
    clip: bool = True,
) -> tf.Tensor:
    """One signed-gradient step of `epsilon` pixel units on the cross-entropy of `labels`.

    Untargeted moves away from the (true) labels; targeted moves towards them.
    With `clip=False` the perturbation is exactly epsilon wherever the gradient is
    non-zero, before any clipping to the image range.
    """
    if not 0 < epsilon <= 255:
        raise ValueError(f"FGSM epsilon must be in (0, 255] pixel units, got {epsilon}")
    return fast_gradient_method(
        logits_fn,
        tf.convert_to_tensor(images, tf.float32),
        pixels_to_model(epsilon),
        np.inf,
        clip_min=CLIP_MIN if clip else None,
        clip_max=CLIP_MAX if clip else None,
        y=tf.convert_to_tensor(labels, tf.int64),
        targeted=targeted,
    )
