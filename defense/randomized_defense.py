"""The randomized defense as one differentiable Keras model: images in, scores out.

`RandomizedDefense(model, config)` puts the config's randomization in front of
`model` and averages the per-pattern scores `softmax(logits) + aux_weight *
softmax(aux_logits)` over `num_iterations` fresh patterns per image (the config's
patterns per image unless given), drawn at every call. Unlike
Keras' random layers it randomizes at inference too: the randomness is the
defense. Its argmax is the defense's decision rule: for the same seed it draws
the patterns `RandomizedEnsemble` (the batch driver the runner uses) draws, and
gives its labels.

Its gradient is the gradient of the mean over the drawn patterns: an
Expectation-over-Transformation estimate (Athalye et al., ICML 2018), which is
what makes it attackable by any gradient attack, and why it must be attacked
that way to be evaluated honestly. `eot_estimate` gives, per image, a per-pattern
loss (the cross-entropy, or an attack's own, e.g. APGD's DLR), its EOT gradient
and the scores, all averaged over the same fresh patterns; `loss_gradient` is its
gradient of the cross-entropy, which EOT-PGD follows. Both run the patterns in equal
chunks (`chunk_size` patterns per image per pass) so that memory is bounded:
`call` recomputes each chunk's forward pass during backpropagation
(`tf.recompute_grad`) instead of keeping every chunk's activations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from defense.config import DefenseConfig
from defense.patterns import Pattern, draw_patterns, make_generator, outputs_through_config

OUTPUTS = ("scores", "log_scores")
# (logits [M, classes], labels [M]) -> the loss per item [M].
ItemLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per item, the cross-entropy of `labels` (the loss EOT-PGD raises)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))


class EOTEstimate(NamedTuple):
    """Per image, averages over the same fresh patterns."""

    losses: tf.Tensor  # [N] the per-pattern loss
    gradient: tf.Tensor  # [N, H, W, 3] its gradient, the EOT gradient
    scores: tf.Tensor  # [N, classes] the per-pattern scores (the defense's decision)


def pattern_scores(outputs: dict[str, tf.Tensor], aux_weight: float) -> tf.Tensor:
    """Per-item score: softmax of the logits plus `aux_weight` times softmax of the aux logits."""
    scores = tf.nn.softmax(tf.cast(outputs["logits"], tf.float32))
    if aux_weight and "aux_logits" in outputs:
        scores += aux_weight * tf.nn.softmax(tf.cast(outputs["aux_logits"], tf.float32))
    return scores


def pattern_losses(
    outputs: dict[str, tf.Tensor],
    labels: tf.Tensor,
    aux_weight: float,
    item_loss: ItemLoss = cross_entropy,
) -> tf.Tensor:
    """Per-item loss of the logits, plus `aux_weight` times that of the aux logits.

    With the cross-entropy: the loss behind the per-pattern score (and slim's own
    training loss, which weights the aux head 0.4 too).
    """
    losses = item_loss(outputs["logits"], labels)
    if aux_weight and "aux_logits" in outputs:
        losses += aux_weight * item_loss(outputs["aux_logits"], labels)
    return losses


def equal_chunks(samples: int, chunk_size: int | None) -> tuple[int, int]:
    """(number of chunks, patterns per chunk): equal chunks of at most `chunk_size`
    (default: one chunk) covering `samples`; the last chunk's surplus is weighted 0."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    count = -(-samples // (chunk_size or samples))
    return count, -(-samples // count)


class RandomizedDefense(keras.Model):
    """`model` behind the randomization of `config`: [-1, 1] NHWC images in, [N, classes] out.

    Each call averages the scores of `num_iterations` (default: the config's) fresh
    patterns per image; `output="log_scores"` returns
    their logarithm instead, logits of the same decision for attack suites that
    take logits. Patterns come from `generator`, or one seeded with `seed`, or
    (default) one from OS entropy.
    """

    def __init__(
        self,
        model: keras.Model,
        config: DefenseConfig,
        *,
        num_iterations: int | None = None,
        chunk_size: int | None = None,
        output: str = "scores",
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.classifier = model
        self.config = config
        self.num_iterations = config.num_iterations if num_iterations is None else num_iterations
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        self.chunk_size = chunk_size
        self.num_chunks, self.patterns_per_chunk = equal_chunks(self.num_iterations, chunk_size)
        self.output_kind = output
        self.generator = generator if generator is not None else make_generator(seed)
        # Without autograph: an error an item loss raises while tracing stays as it is.
        self._chunk_estimate = tf.function(self._estimate_of_chunk, autograph=False)

    def draw_patterns(self, batch_size: int | tf.Tensor, count: int | None = None) -> Pattern:
        """`count` (default: `num_iterations`) patterns per image, pattern-major, as the
        defense draws them (`defense.patterns.draw_patterns`)."""
        count = self.num_iterations if count is None else count
        return draw_patterns(self.generator, self.config, batch_size, count)

    def item_outputs(self, items: tf.Tensor, patterns: Pattern) -> dict[str, tf.Tensor]:
        """The classifier's outputs for `items`, item i seen through pattern i."""
        return outputs_through_config(self.classifier, items, patterns, self.config)

    def item_scores(self, items: tf.Tensor, patterns: Pattern) -> tf.Tensor:
        """Per-item scores [M, classes], item i seen through pattern i."""
        return pattern_scores(self.item_outputs(items, patterns), self.config.aux_weight)

    def _chunk_weights(self, chunk: int, batch_size: int | tf.Tensor) -> tf.Tensor:
        """1 for the chunk's real patterns, 0 for the surplus of the last chunk, per item."""
        valid = min(self.patterns_per_chunk, self.num_iterations - chunk * self.patterns_per_chunk)
        sample = tf.range(self.patterns_per_chunk * batch_size) // batch_size
        return tf.cast(sample < valid, tf.float32)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.convert_to_tensor(images, tf.float32)
        # [N, H, W, 3] -> [N, classes]; N may be unknown when traced (Keras' predict).
        batch_size = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
        total = None
        for chunk in range(self.num_chunks):
            patterns = self.draw_patterns(batch_size, self.patterns_per_chunk)
            weights = self._chunk_weights(chunk, batch_size)

            def chunk_sum(
                images: tf.Tensor, patterns: Pattern = patterns, weights: tf.Tensor = weights
            ) -> tf.Tensor:
                # [chunk * N, H, W, 3] -> [chunk * N, classes] -> [N, classes]
                items = tf.tile(images, [self.patterns_per_chunk, 1, 1, 1])
                scores = self.item_scores(items, patterns) * weights[:, None]
                return tf.reduce_sum(
                    tf.reshape(scores, [self.patterns_per_chunk, batch_size, -1]), axis=0
                )

            step = tf.recompute_grad(chunk_sum) if self.num_chunks > 1 else chunk_sum
            total = step(images) if total is None else total + step(images)
        assert total is not None, "there is at least one chunk"
        scores = total / self.num_iterations
        return tf.math.log(scores) if self.output_kind == "log_scores" else scores

    def _estimate_of_chunk(
        self,
        images: tf.Tensor,
        labels: tf.Tensor,
        patterns_per_chunk: int,
        valid: tf.Tensor,
        item_loss: ItemLoss,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per image, the summed losses, their gradient and the summed scores over one
        chunk's first `valid` patterns."""
        batch_size = int(images.shape[0])
        patterns = self.draw_patterns(batch_size, patterns_per_chunk)
        sample = tf.range(patterns_per_chunk * batch_size) // batch_size
        weights = tf.cast(sample < valid, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(images)
            # [chunk * N, H, W, 3] -> per item outputs and losses [chunk * N]
            items = tf.tile(images, [patterns_per_chunk, 1, 1, 1])
            outputs = self.item_outputs(items, patterns)
            labels_per_item = tf.tile(labels, [patterns_per_chunk])
            aux_weight = self.config.aux_weight
            losses = weights * pattern_losses(outputs, labels_per_item, aux_weight, item_loss)
            total = tf.reduce_sum(losses)
        scores = pattern_scores(outputs, aux_weight) * weights[:, None]
        # [chunk * N] -> [N]; [chunk * N, classes] -> [N, classes]
        image_losses = tf.reduce_sum(tf.reshape(losses, [patterns_per_chunk, batch_size]), 0)
        image_scores = tf.reduce_sum(
            tf.reshape(scores, [patterns_per_chunk, batch_size, -1]), axis=0
        )
        return image_losses, tape.gradient(total, images), image_scores

    def eot_estimate(
        self,
        images: tf.Tensor,
        labels: tf.Tensor,
        *,
        samples: int | None = None,
        item_loss: ItemLoss = cross_entropy,
    ) -> EOTEstimate:
        """Per image, the per-pattern `item_loss` of `labels`, its gradient and the
        scores, averaged over `samples` fresh patterns (the attacker's EOT samples;
        default: the defense's `num_iterations`), chunk by chunk. Each chunk is
        compiled once per shape and `item_loss`: give the same function each time."""
        images = tf.convert_to_tensor(images, tf.float32)
        labels = tf.convert_to_tensor(labels, tf.int64)
        if images.shape.rank != 4 or None in images.shape:
            raise ValueError(f"images must be NHWC with a static shape, got {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"need one label per image, got {labels.shape} for {images.shape}")
        count = self.num_iterations if samples is None else samples
        num_chunks, per_chunk = equal_chunks(count, self.chunk_size)
        losses, gradient, scores = 0.0, tf.zeros_like(images), 0.0
        for chunk in range(num_chunks):
            valid = tf.constant(min(per_chunk, count - chunk * per_chunk))
            part = self._chunk_estimate(images, labels, per_chunk, valid, item_loss)
            losses, gradient, scores = losses + part[0], gradient + part[1], scores + part[2]
        return EOTEstimate(losses / count, gradient / count, scores / count)

    def loss_gradient(
        self, images: tf.Tensor, labels: tf.Tensor, *, samples: int | None = None
    ) -> tf.Tensor:
        """Per image, the gradient of the cross-entropy of `labels` averaged over
        `samples` fresh patterns: the EOT gradient (`eot_estimate`)."""
        return self.eot_estimate(images, labels, samples=samples).gradient
