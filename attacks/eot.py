"""EOT-PGD: the adaptive attack on the full randomized defense (Athalye et al. 2018).

Expectation over Transformation: every PGD step follows the sign of the loss
gradient averaged over `samples` fresh random patterns, drawn by the defense's
own code (`defense.patterns.draw_patterns`: sizes in [low, high), offsets,
left-right flips with the config's probability, one pattern per batch or per
image as configured) and applied as the defense applies them
(`defense.patterns.outputs_through_config`).
The patterns of a step go through the network as one batch (the images tiled
`samples` times), or in equal chunks to bound memory, inside one `tf.function`
traced once per batch shape.

The loss is the one the defense's decision rests on: the cross-entropy of the
logits, plus `aux_weight` times the cross-entropy of the aux logits where the
model has an aux head, mirroring the defense's per-pattern score
`softmax(logits) + aux_weight * softmax(aux_logits)` (and slim's own training
loss, which weights the aux head 0.4 too).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.pgd import COMPETITION_MAX_EPSILON, check_linf_budget
from defense.config import DefenseConfig
from defense.patterns import draw_patterns, outputs_through_config
from defense.randomization import Pattern, make_generator


def eot_losses(outputs: dict[str, tf.Tensor], labels: tf.Tensor, aux_weight: float) -> tf.Tensor:
    """Per-item cross-entropy of the logits, plus `aux_weight` times that of the aux logits."""

    def cross_entropy(logits):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))

    losses = cross_entropy(outputs["logits"])
    if aux_weight and "aux_logits" in outputs:
        losses += aux_weight * cross_entropy(outputs["aux_logits"])
    return losses


class EOTPGD:
    """L-infinity PGD on a model behind the randomization defense described by `config`.

    `samples` patterns per step, at most `chunk_size` of them (default: all) per
    forward/backward pass; the chunks are equal, and where they do not divide
    `samples` the surplus patterns of the last chunk are drawn but weighted 0.
    Patterns and the random start come from `generator`, or one seeded with
    `seed`, or (default) one from OS entropy.
    """

    def __init__(
        self,
        model: keras.Model,
        config: DefenseConfig,
        *,
        samples: int = 30,
        chunk_size: int | None = None,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
    ):
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.config = config
        self.samples = samples
        self.num_chunks = -(-samples // (chunk_size or samples))
        self.chunk_size = -(-samples // self.num_chunks)
        self.generator = generator if generator is not None else make_generator(seed)
        self._chunk_gradient = tf.function(self._gradient_of_chunk)

    def draw_patterns(self, batch_size: int) -> Pattern:
        """One chunk's patterns, `chunk_size` per image, sample-major, as the defense draws them."""
        return draw_patterns(self.generator, self.config, batch_size, self.chunk_size)

    def _gradient_of_chunk(self, images, labels, valid_samples):
        """Gradient of the summed loss over one chunk's first `valid_samples` patterns."""
        batch_size = int(images.shape[0])
        patterns = self.draw_patterns(batch_size)
        sample = tf.range(self.chunk_size * batch_size) // batch_size
        weights = tf.cast(sample < valid_samples, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(images)
            items = tf.tile(images, [self.chunk_size, 1, 1, 1])
            outputs = outputs_through_config(self.model, items, patterns, self.config)
            losses = eot_losses(outputs, tf.tile(labels, [self.chunk_size]), self.config.aux_weight)
            loss = tf.reduce_sum(weights * losses)
        return tape.gradient(loss, images)

    def gradient(self, images, labels) -> tf.Tensor:
        """Per image, the loss gradient averaged over `samples` fresh patterns."""
        images = tf.convert_to_tensor(images, tf.float32)
        labels = tf.convert_to_tensor(labels, tf.int64)
        if images.shape.rank != 4 or None in images.shape:
            raise ValueError(f"images must be NHWC with a static shape, got {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"need one label per image, got {labels.shape} for {images.shape}")
        total = tf.zeros_like(images)
        for chunk in range(self.num_chunks):
            valid = min(self.chunk_size, self.samples - chunk * self.chunk_size)
            total += self._chunk_gradient(images, labels, tf.constant(valid))
        return total / self.samples

    def __call__(
        self,
        images,
        labels,
        *,
        epsilon: float = COMPETITION_MAX_EPSILON,
        step_size: float = 2.0,
        steps: int = 10,
        targeted: bool = False,
        random_start: bool = True,
    ) -> tf.Tensor:
        """Adversarial images within `epsilon` (pixel units) of `images`, in [-1, 1].

        Untargeted raises the loss of the true `labels`; targeted lowers that of
        the target `labels`. Steps are `step_size` pixel units along the sign of
        the EOT gradient, each followed by projection onto the ball and [-1, 1].
        """
        check_linf_budget(epsilon, step_size, steps)
        images = tf.convert_to_tensor(images, tf.float32)
        radius, step = pixels_to_model(epsilon), pixels_to_model(step_size)
        if targeted:
            step = -step

        def project(candidates):
            candidates = images + tf.clip_by_value(candidates - images, -radius, radius)
            return tf.clip_by_value(candidates, CLIP_MIN, CLIP_MAX)

        adversarial = images
        if random_start:
            adversarial = project(images + self.generator.uniform(images.shape, -radius, radius))
        for _ in range(steps):
            adversarial = project(adversarial + step * tf.sign(self.gradient(adversarial, labels)))
        return adversarial


def eot_pgd(
    model: keras.Model,
    images,
    labels,
    *,
    config: DefenseConfig,
    epsilon: float = COMPETITION_MAX_EPSILON,
    step_size: float = 2.0,
    steps: int = 10,
    samples: int = 30,
    targeted: bool = False,
    random_start: bool = True,
    seed: int | None = None,
    chunk_size: int | None = None,
) -> tf.Tensor:
    """EOT-PGD on `model` behind the defense `config`: see `EOTPGD`."""
    attack = EOTPGD(model, config, samples=samples, chunk_size=chunk_size, seed=seed)
    return attack(
        images,
        labels,
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        targeted=targeted,
        random_start=random_start,
    )
