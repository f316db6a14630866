"""FGSM (Goodfellow et al. 2015) through cleverhans, with the paper's epsilons."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from attacks.kinds import FixedBudgetAttack, check_epsilon


class FGSM(FixedBudgetAttack):
    """One signed-gradient step of `epsilon` pixel units on the cross-entropy of the labels.

    Untargeted moves away from the (true) labels; targeted moves towards them.

    Hyper-parameters:
        epsilon: L-infinity budget in pixel units (the paper's sets: 2, 5, 10).
    """

    def __init__(self, *, epsilon: float = 2.0) -> None:
        check_epsilon(epsilon)
        self.epsilon = epsilon

    def __call__(
        self,
        logits_fn: LogitsFn,
        images: tf.Tensor,
        labels: tf.Tensor,
        *,
        targeted: bool = False,
        clip: bool = True,
    ) -> tf.Tensor:
        """Adversarial images in [-1, 1]; with `clip=False` the perturbation is exactly
        epsilon wherever the gradient is non-zero, before any clipping to the image range."""
        return fast_gradient_method(
            logits_fn,
            tf.convert_to_tensor(images, tf.float32),
            pixels_to_model(self.epsilon),
            np.inf,
            clip_min=CLIP_MIN if clip else None,
            clip_max=CLIP_MAX if clip else None,
            y=tf.convert_to_tensor(labels, tf.int64),
            targeted=targeted,
        )
