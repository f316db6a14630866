"""The randomized ensemble: the batch driver of `RandomizedDefense`, which the runner uses.

For every iteration an image gets a fresh pattern (and a left-right flip with the
config's `flip_probability`, 0.5 for the entry); its score is
`softmax(logits) + aux_weight * softmax(aux_logits)`. All (iteration, image)
items of a batch go through the network together, in fixed-size chunks that
bound memory and keep one static input shape, so `tf.function` traces once; the
scores are summed in float64 and the label is their argmax. The patterns, the
per-item scores and the decision are `RandomizedDefense`'s: for the same seed its
argmax gives these labels.
With a `tf.distribute` strategy each replica takes whole chunks of that same shape
(`defense.distribute`), so the labels do not depend on the number of devices.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from defense.config import DefenseConfig
from defense.randomization import Pattern
from defense.randomized_defense import RandomizedDefense


class RandomizedEnsemble:
    """Classify batches of [-1, 1] images with `RandomizedDefense(model, config)`."""

    def __init__(
        self,
        model: keras.Model,
        config: DefenseConfig,
        *,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
        chunk_size: int = 32,
        jit_compile: bool = False,
        strategy: tf.distribute.Strategy | None = None,
    ) -> None:
        """`jit_compile` compiles each chunk's forward pass with XLA; `strategy` (for
        example `defense.distribute.mirrored_strategy()`, with the model built in its
        scope) spreads the chunks over its replicas, one chunk per replica at a time."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.defense = RandomizedDefense(model, config, generator=generator, seed=seed)
        self.model = model
        self.config = config
        self.chunk_size = chunk_size
        self.strategy = strategy
        self.generator = self.defense.generator
        self._chunk_scores = tf.function(
            self._scores_of_items, jit_compile=jit_compile, reduce_retracing=True
        )
        if strategy is not None:
            self._replicated_scores = tf.function(self._run_on_replicas, reduce_retracing=True)

    def draw_patterns(self, batch_size: int) -> Pattern:
        """Patterns for every (iteration, image) item, iteration-major (`draw_patterns`)."""
        return self.defense.draw_patterns(batch_size)

    def _scores_of_items(
        self,
        images: tf.Tensor,
        image_index: tf.Tensor,
        size: tf.Tensor,
        top: tf.Tensor,
        left: tf.Tensor,
        flip: tf.Tensor,
    ) -> tf.Tensor:
        return self.defense.item_scores(
            tf.gather(images, image_index), Pattern(size, top, left, flip)
        )

    def _run_on_replicas(
        self, images: tf.Tensor, *per_replica_fields: tf.distribute.DistributedValues
    ) -> tf.distribute.DistributedValues:
        """One chunk per replica, each through `_scores_of_items`."""
        assert self.strategy is not None, "only traced with a strategy"
        return self.strategy.run(self._chunk_scores, args=(images, *per_replica_fields))

    def _scores_of_chunks(
        self, images: tf.Tensor, fields_of_chunks: list[list[tf.Tensor]]
    ) -> list[np.ndarray]:
        """Scores of several equal-shaped chunks: one after another, or one per replica."""
        strategy = self.strategy
        if strategy is None:
            return [self._chunk_scores(images, *fields).numpy() for fields in fields_of_chunks]

        def per_replica(position: int) -> tf.distribute.DistributedValues:
            return strategy.experimental_distribute_values_from_function(
                lambda context: fields_of_chunks[context.replica_id_in_sync_group][position]
            )

        outputs = self._replicated_scores(
            images, *(per_replica(i) for i in range(len(fields_of_chunks[0])))
        )
        return [tensor.numpy() for tensor in strategy.experimental_local_results(outputs)]

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Summed scores [N, classes] for a batch of [-1, 1] NHWC float32 images."""
        images = tf.convert_to_tensor(images, tf.float32)
        batch_size = int(images.shape[0])
        patterns = self.draw_patterns(batch_size)
        items = self.config.num_iterations * batch_size
        image_index = np.tile(np.arange(batch_size, dtype=np.int32), self.config.num_iterations)
        chunk_size = min(self.chunk_size, items)
        replicas = 1 if self.strategy is None else self.strategy.num_replicas_in_sync
        total = None
        for start in range(0, items, chunk_size * replicas):
            chunks = []
            for replica in range(replicas):
                first = start + replica * chunk_size
                positions = np.arange(first, first + chunk_size)
                chunks.append((positions % items, positions < items))
            fields_of_chunks = [
                [tf.constant(image_index[chunk]), *(tf.gather(field, chunk) for field in patterns)]
                for chunk, _ in chunks
            ]
            for (chunk, valid), chunk_scores in zip(
                chunks, self._scores_of_chunks(images, fields_of_chunks), strict=True
            ):
                if total is None:
                    total = np.zeros((batch_size, chunk_scores.shape[1]), np.float64)
                np.add.at(total, image_index[chunk][valid], chunk_scores[valid])
        assert total is not None, "a batch has at least one item"
        return total

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels (argmax over all classes, slim indexing: 0 = background, 1..1000)."""
        return np.argmax(self.scores(images), axis=1)
