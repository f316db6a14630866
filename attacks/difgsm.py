"""DI-FGSM (Xie, Zhang, Zhou, Bai, Wang, Ren, Yuille, CVPR 2019, "Improving
Transferability of Adversarial Examples with Input Diversity").

Iterative FGSM (I-FGSM / BIM: `steps` signed-gradient steps of `epsilon / steps`,
each projected onto the epsilon ball and [-1, 1]) whose every step, with
probability `diversity_probability`, sees the model through a random resize to
[size, limit) and a random zero-pad to limit x limit: the paper's 299 -> [299, 330)
padded to 330, the same transformation as this project's defense. The pattern is
drawn and applied by the defense's own code (`defense.patterns.draw_patterns` on a
`DefenseConfig` of that range, `apply_patterns`), one pattern and one coin per step
for the whole batch, as the paper's code does (`tf.cond` on one uniform draw).

A transfer attack: it attacks a logits function (the undefended model), and the
defended model is judged on its result afterwards. The limit is the input size
times `max_size_ratio` (330 / 299 by default), so it scales to models of any size
(the 32x32 digits CNN: [32, 35) padded to 35). Patterns and coins come from a
generator seeded from TensorFlow's global seed, as PGD's random start is
(`tf.random.set_seed` makes a run reproducible).
"""

from __future__ import annotations

import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, LogitsFn, pixels_to_model
from attacks.kinds import FixedBudgetAttack, check_count, check_linf_budget, check_number
from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from defense.patterns import apply_patterns, draw_patterns

# The paper's resize limit over its input size, 330 / 299, to four places (an image of
# 299 gets a limit of round(299 * 1.1037) = 330). A literal: the catalog reads it.
PAPER_SIZE_RATIO = 1.1037
# The largest limit over the input size: diversity, not a different scale (and a
# canvas at most four times the pixels of the image).
MAX_SIZE_RATIO = 2.0
# TensorFlow's largest int64 seed value, for the generator drawn from the global seed.
_SEED_RANGE = 2**63 - 1


def resize_limit(size: int, ratio: float) -> int:
    """The canvas of an input of `size`: round(size * ratio), at least size + 1 so that
    every input size has at least one random offset."""
    return max(size + 1, round(size * ratio))


def diversity_config(size: int, ratio: float) -> DefenseConfig:
    """The defense's randomization for DI-FGSM: sizes in [size, limit) zero-padded to
    limit, one pattern per batch, no flips (the paper's diversity)."""
    limit = resize_limit(size, ratio)
    return DefenseConfig(
        name="di_fgsm",
        low=size,
        high=limit,
        out_size=limit,
        num_iterations=1,
        flip_probability=0.0,
        aux_weight=0.0,
    )


class DIFGSM(FixedBudgetAttack):
    """I-FGSM whose steps see the model through random resizing and padding.

    Untargeted raises the cross-entropy of the true labels; targeted lowers that of
    the target labels. Each step follows the sign of the gradient through the step's
    transformation (or through none), then projects onto the ball and [-1, 1].

    Hyper-parameters:
        epsilon: L-infinity budget in pixel units (the competition's 16).
        step_size: Step in pixel units (None: epsilon / steps, I-FGSM's).
        steps: Iterations.
        diversity_probability: Chance that a step resizes and pads its input (0: I-FGSM).
        max_size_ratio: Resize limit over the input size: sizes in [size, limit) padded
            to limit = round(size * ratio), at least size + 1 (the paper's 330 / 299).
    """

    def __init__(
        self,
        *,
        epsilon: float = 16.0,
        step_size: float | None = None,
        steps: int = 10,
        diversity_probability: float = 0.5,
        max_size_ratio: float = PAPER_SIZE_RATIO,
    ) -> None:
        check_count("steps", steps, 1)
        self.epsilon = epsilon
        self.step_size = epsilon / steps if step_size is None else step_size
        self.steps = steps
        self.diversity_probability = diversity_probability
        self.max_size_ratio = max_size_ratio
        check_linf_budget(epsilon, self.step_size, steps)
        check_number("diversity_probability", diversity_probability, 0.0, high=1.0)
        check_number("max_size_ratio", max_size_ratio, 1.0, strictly=True, high=MAX_SIZE_RATIO)

    def run(
        self, target: LogitsFn, images: tf.Tensor, labels: tf.Tensor, *, targeted: bool
    ) -> tf.Tensor:
        """Adversarial images within `epsilon` (pixel units) of `images`, in [-1, 1]."""
        height, width = images.shape[1], images.shape[2]
        if height != width:
            raise ParameterError(f"DIFGSM resizes square images, got {height}x{width}", "images")
        config = diversity_config(height, self.max_size_ratio)
        seed = tf.random.uniform([], 0, _SEED_RANGE, dtype=tf.int64)
        generator = tf.random.Generator.from_seed(int(seed))
        radius, step = pixels_to_model(self.epsilon), pixels_to_model(self.step_size)
        if targeted:
            step = -step
        adversarial = images
        for _ in range(self.steps):
            diverse = bool(generator.uniform([]) < self.diversity_probability)
            patterns = draw_patterns(generator, config, images.shape[0], 1)
            with tf.GradientTape() as tape:
                tape.watch(adversarial)
                seen = adversarial
                if diverse:
                    seen = apply_patterns(
                        adversarial, patterns, out_size=config.out_size, method=config.method
                    )
                loss = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels, target(seen))
                )
            gradient = tape.gradient(loss, adversarial)
            moved = adversarial + step * tf.sign(gradient)
            adversarial = images + tf.clip_by_value(moved - images, -radius, radius)
            adversarial = tf.clip_by_value(adversarial, CLIP_MIN, CLIP_MAX)
        return adversarial
