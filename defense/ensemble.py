"""The randomized ensemble: the batch driver of `RandomizedDefense`, which the runner uses.

For every iteration an image gets a fresh pattern (and a left-right flip with the
config's `flip_probability`, 0.5 for the entry); its score is
`softmax(logits) + aux_weight * softmax(aux_logits)`. All (iteration, image)
items of a batch go through the network together, in fixed-size chunks that
bound memory and keep one static input shape, so `tf.function` traces once; the
scores are summed in float64 and the label is their argmax. The patterns, the
per-item scores and the decision are `RandomizedDefense`'s: for the same seed its
argmax gives these labels.

Early exit (on by default) skips work the label does not need: a pattern adds at
most `1 + aux_weight` to any class, so once an image's leading class is ahead of
every other by more than that times its remaining patterns, no remaining pattern
can change its label, and its remaining items leave the queue. The patterns are
drawn for all iterations up front as without it (the same seed, the same
patterns), the sums of undecided images are the exhaustive ones, operation for
operation: the labels are the exhaustive run's, always.
With a `tf.distribute` strategy each replica takes whole chunks of that same shape
(`defense.distribute`), so the labels do not depend on the number of devices.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from defense.config import DefenseConfig
from defense.patterns import Pattern
from defense.randomized_defense import RandomizedDefense

# Far above float64's rounding of a sum of a few thousand scores of at most a few units.
ROUNDING_MARGIN = 1e-9


class RandomizedEnsemble:
    """Classify batches of [-1, 1] images with `RandomizedDefense(model, config)`."""

    def __init__(
        self,
        model: keras.Model,
        config: DefenseConfig,
        *,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
        chunk_size: int = 16,
        jit_compile: bool = False,
        strategy: tf.distribute.Strategy | None = None,
        early_exit: bool = True,
    ) -> None:
        """`jit_compile` compiles each chunk's forward pass with XLA; `strategy` (for
        example `defense.distribute.mirrored_strategy()`, with the model built in its
        scope) spreads the chunks over its replicas, one chunk per replica at a time.
        `early_exit` stops evaluating an image once its label is proven (`decided`);
        `patterns_evaluated` and `patterns_drawn` count over all calls what it saved."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.early_exit = early_exit
        # Each pattern adds softmax + aux_weight * softmax: at most 1 + aux_weight to a
        # class; the factor covers float32's rounding of that sum.
        self.score_bound = (1.0 + config.aux_weight) * (1.0 + 1e-5)
        self.patterns_evaluated = 0
        self.patterns_drawn = 0
        self.defense = RandomizedDefense(model, config, generator=generator, seed=seed)
        self.chunk_size = chunk_size
        self.strategy = strategy
        self._chunk_scores = tf.function(
            self._scores_of_items, jit_compile=jit_compile, reduce_retracing=True
        )
        if strategy is not None:
            self._replicated_scores = tf.function(self._run_on_replicas, reduce_retracing=True)

    @property
    def model(self) -> keras.Model:
        """The classifier, as the defense holds it."""
        return self.defense.classifier

    @property
    def config(self) -> DefenseConfig:
        """The defense's config."""
        return self.defense.config

    @property
    def generator(self) -> tf.random.Generator:
        """The defense's pattern generator (`reset_from_seed` replays its patterns)."""
        return self.defense.generator

    def draw_patterns(self, batch_size: int) -> Pattern:
        """Patterns for every (pattern, image) item, pattern-major (`draw_patterns`)."""
        return self.defense.draw_patterns(batch_size)

    def _scores_of_items(
        self, items: tf.Tensor, size: tf.Tensor, top: tf.Tensor, left: tf.Tensor, flip: tf.Tensor
    ) -> tf.Tensor:
        # [chunk, H, W, 3] items, [chunk] pattern fields -> [chunk, classes]: the compiled
        # shapes are the chunk's only, whatever the batch size.
        return self.defense.item_scores(items, Pattern(size, top, left, flip))

    def _run_on_replicas(
        self, *per_replica_fields: tf.distribute.DistributedValues
    ) -> tf.distribute.DistributedValues:
        """One chunk per replica, each through `_scores_of_items`."""
        assert self.strategy is not None, "only traced with a strategy"
        return self.strategy.run(self._chunk_scores, args=per_replica_fields)

    def _scores_of_chunks(self, fields_of_chunks: list[list[tf.Tensor]]) -> list[np.ndarray]:
        """Scores of several equal-shaped chunks: one after another, or one per replica."""
        strategy = self.strategy
        if strategy is None:
            return [self._chunk_scores(*fields).numpy() for fields in fields_of_chunks]

        def per_replica(position: int) -> tf.distribute.DistributedValues:
            return strategy.experimental_distribute_values_from_function(
                lambda context: fields_of_chunks[context.replica_id_in_sync_group][position]
            )

        outputs = self._replicated_scores(
            *(per_replica(i) for i in range(len(fields_of_chunks[0])))
        )
        return [tensor.numpy() for tensor in strategy.experimental_local_results(outputs)]

    def _evaluate(self, images: np.ndarray, early_exit: bool) -> tuple[np.ndarray, np.ndarray]:
        """Summed float64 scores [N, classes] and patterns evaluated per image [N].

        Items go through the network pattern-major in chunks of one static shape;
        with `early_exit` an image leaves the queue as soon as `decided` proves its label.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        batch_size = int(images.shape[0])
        iterations = self.config.num_iterations
        patterns = self.draw_patterns(batch_size)
        image_index = np.tile(np.arange(batch_size, dtype=np.int32), iterations)
        pending = np.arange(iterations * batch_size)
        chunk_size = min(self.chunk_size, len(pending))
        replicas = 1 if self.strategy is None else self.strategy.num_replicas_in_sync
        evaluated = np.zeros(batch_size, np.int64)
        total: np.ndarray | None = None
        while len(pending):
            step = pending[: chunk_size * replicas]
            pending = pending[len(step) :]
            # [chunk_size * replicas] item indices, the last chunk filled with repeats
            # whose scores are dropped.
            slots = np.resize(step, chunk_size * replicas)
            chunks = [slots[r * chunk_size : (r + 1) * chunk_size] for r in range(replicas)]
            fields_of_chunks = [
                [
                    tf.gather(images, image_index[chunk]),
                    *(tf.gather(field, chunk) for field in patterns),
                ]
                for chunk in chunks
            ]
            scores = np.concatenate(self._scores_of_chunks(fields_of_chunks))[: len(step)]
            if total is None:
                total = np.zeros((batch_size, scores.shape[1]), np.float64)
            np.add.at(total, image_index[step], scores)
            np.add.at(evaluated, image_index[step], 1)
            if early_exit and len(pending):
                done = decided(total, iterations - evaluated, self.score_bound)
                pending = pending[~done[image_index[pending]]]
        assert total is not None, "a batch has at least one item"
        self.patterns_evaluated += int(evaluated.sum())
        self.patterns_drawn += iterations * batch_size
        return total, evaluated

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Summed scores [N, classes] of all patterns, for a batch of [-1, 1] NHWC
        float32 images (never cut short: every pattern's score is in the sum)."""
        return self._evaluate(images, early_exit=False)[0]

    def decide(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels [N] (as `predict`) and how many patterns each image needed [N]."""
        total, evaluated = self._evaluate(images, early_exit=self.early_exit)
        return np.argmax(total, axis=1), evaluated

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels (argmax over all classes, slim indexing: 0 = background, 1..1000).

        With `early_exit` the same labels as the exhaustive run for the same seed,
        from fewer patterns.
        """
        return self.decide(images)[0]


def decided(total: np.ndarray, remaining: np.ndarray, score_bound: float) -> np.ndarray:
    """Per image [N]: whether `remaining` more patterns, each adding at most
    `score_bound` to any class, cannot change the argmax of `total` [N, classes].

    The leader (lowest index among equals, as argmax) keeps the label when it is
    ahead of every other class by more than `remaining * score_bound`: strictly, so
    that a tie it might end in (which a lower class index would win) counts as
    undecided, and with a margin far above float64's rounding of the sums.
    """
    if total.shape[1] < 2:
        return np.ones(len(total), bool)
    top_two = -np.partition(-total, 1, axis=1)[:, :2]
    gap = top_two[:, 0] - top_two[:, 1]
    return gap > remaining * score_bound + ROUNDING_MARGIN
