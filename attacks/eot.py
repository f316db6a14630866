"""EOT-PGD: the adaptive attack on the full randomized defense (Athalye et al. 2018).

Expectation over Transformation: PGD on `defense.RandomizedDefense`, every step
following the sign of its EOT gradient (`RandomizedDefense.loss_gradient`): the
loss gradient averaged over `samples` fresh random patterns, drawn and applied by
the defense's own code (sizes in [low, high), offsets, left-right flips with the
config's probability, one pattern per batch or per image as configured), in equal
chunks of the defense's `chunk_size` patterns per pass to bound memory.

The loss is the one the defense's decision rests on: the cross-entropy of the
logits, plus `aux_weight` times the cross-entropy of the aux logits where the
model has an aux head (`defense.randomized_defense.pattern_losses`). The random
start and the patterns come from the defense's generator, so a seeded defense
gives the same adversarials. cleverhans' PGD is not used here: it takes neither
a gradient nor a generator, and computes the gradient of all patterns at once.
"""

from __future__ import annotations

import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.kinds import FixedBudgetAttack, check_count, check_linf_budget
from attacks.pgd import default_step_size
from defense.randomized_defense import RandomizedDefense


class EOTPGD(FixedBudgetAttack):
    """L-infinity PGD on the EOT gradient of the randomized defense.

    Untargeted raises the loss of the true labels; targeted lowers that of the
    target labels. Steps go along the sign of the EOT gradient, each followed by
    projection onto the ball and [-1, 1].

    Hyper-parameters:
        epsilon: L-infinity budget in pixel units (the competition's 16).
        step_size: Step in pixel units (None: epsilon / 8).
        steps: Iterations.
        samples: Random patterns per EOT gradient.
        random_start: Start at a random point of the ball.
    """

    # Its target is a `defense.RandomizedDefense` (any other is refused when called).
    on_defense = True

    def __init__(
        self,
        *,
        epsilon: float = 16.0,
        step_size: float | None = None,
        steps: int = 10,
        samples: int = 30,
        random_start: bool = True,
    ) -> None:
        self.epsilon = epsilon
        self.step_size = default_step_size(epsilon, step_size)
        self.steps = steps
        self.samples = samples
        self.random_start = random_start
        check_linf_budget(epsilon, self.step_size, steps)
        check_count("samples", samples, 1)

    def run(
        self,
        target: RandomizedDefense,
        images: tf.Tensor,
        labels: tf.Tensor,
        *,
        targeted: bool,
    ) -> tf.Tensor:
        """Adversarial images within `epsilon` (pixel units) of `images`, in [-1, 1]."""
        radius, step = pixels_to_model(self.epsilon), pixels_to_model(self.step_size)
        if targeted:
            step = -step

        def project(candidates: tf.Tensor) -> tf.Tensor:
            candidates = images + tf.clip_by_value(candidates - images, -radius, radius)
            return tf.clip_by_value(candidates, CLIP_MIN, CLIP_MAX)

        adversarial = images
        if self.random_start:
            noise = target.generator.uniform(images.shape, -radius, radius)
            adversarial = project(images + noise)
        for _ in range(self.steps):
            gradient = target.loss_gradient(adversarial, labels, samples=self.samples)
            adversarial = project(adversarial + step * tf.sign(gradient))
        return adversarial
