"""FGSM (Goodfellow et al. 2015) through cleverhans, with the paper's epsilons."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from attacks import LogitsFn, pixels_to_model
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

    def run(
        self, target: LogitsFn, images: tf.Tensor, labels: tf.Tensor, *, targeted: bool
    ) -> tf.Tensor:
        """`images` moved by exactly epsilon wherever the gradient is non-zero; the base
        class clips the result to [-1, 1] (unless called with `clip=False`)."""
        return fast_gradient_method(
            target,
            images,
            pixels_to_model(self.epsilon),
            np.inf,
            y=labels,
            targeted=targeted,
        )
