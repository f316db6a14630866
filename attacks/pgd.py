"""L-infinity PGD (Madry et al. 2018) through cleverhans, on a fixed target model."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from attacks.kinds import FixedBudgetAttack, check_linf_budget

# The competition's budget in pixel units: the default epsilon of PGD and EOT-PGD.
COMPETITION_MAX_EPSILON = 16.0


def default_step_size(epsilon: float, step_size: float | None) -> float:
    """The step size, `epsilon / 8` when None (2 pixel units at the competition's 16)."""
    return epsilon / 8 if step_size is None else step_size


class PGD(FixedBudgetAttack):
    """PGD within an L-infinity ball, on the cross-entropy of the labels.

    Hyper-parameters:
        epsilon: L-infinity budget in pixel units (the competition's 16).
        step_size: Step in pixel units (None: epsilon / 8).
        steps: Iterations.
        random_start: Start at a random point of the ball.
    """

    def __init__(
        self,
        *,
        epsilon: float = COMPETITION_MAX_EPSILON,
        step_size: float | None = None,
        steps: int = 10,
        random_start: bool = True,
    ) -> None:
        self.epsilon = epsilon
        self.step_size = default_step_size(epsilon, step_size)
        self.steps = steps
        self.random_start = random_start
        check_linf_budget(epsilon, self.step_size, steps)

    def run(
        self, target: LogitsFn, images: tf.Tensor, labels: tf.Tensor, *, targeted: bool
    ) -> tf.Tensor:
        """Adversarial images in [-1, 1]: away from the labels, or towards them when targeted."""
        radius = pixels_to_model(self.epsilon)
        return projected_gradient_descent(
            target,
            images,
            radius,
            pixels_to_model(self.step_size),
            self.steps,
            np.inf,
            clip_min=CLIP_MIN,
            clip_max=CLIP_MAX,
            y=labels,
            targeted=targeted,
            rand_init=self.random_start,
            rand_minmax=radius if self.random_start else None,
            sanity_checks=False,
        )
