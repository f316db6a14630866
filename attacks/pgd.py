"""L-infinity PGD (Madry et al. 2018) through cleverhans, on a fixed target model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model

COMPETITION_MAX_EPSILON = 16


def check_linf_budget(epsilon: float, step_size: float, steps: int) -> None:
    """Validate an L-infinity budget given in pixel units."""
    if not 0 < epsilon <= 255:
        raise ValueError(f"epsilon must be in (0, 255] pixel units, got {epsilon}")
    if not 0 < step_size <= epsilon:
        raise ValueError(f"step size must be in (0, epsilon={epsilon}], got {step_size}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def pgd(
    logits_fn: LogitsFn,
    images: tf.Tensor,
    labels,
    *,
    epsilon: float = COMPETITION_MAX_EPSILON,
    step_size: float = 2.0,
    steps: int = 10,
    targeted: bool = False,
    random_start: bool = True,
) -> tf.Tensor:
    """PGD within an epsilon (pixel units) L-infinity ball, steps of step_size pixel units."""
    check_linf_budget(epsilon, step_size, steps)
    radius = pixels_to_model(epsilon)
    return projected_gradient_descent(
        logits_fn,
        tf.convert_to_tensor(images, tf.float32),
        radius,
        pixels_to_model(step_size),
        steps,
        np.inf,
        clip_min=CLIP_MIN,
        clip_max=CLIP_MAX,
        y=tf.convert_to_tensor(labels, tf.int64),
        targeted=targeted,
        rand_init=random_start,
        rand_minmax=radius if random_start else None,
        sanity_checks=False,
    )
