"""The defense's randomization as a Keras layer (Xie et al., ICLR 2018, Section 3.2.1).

`RandomResizePad` draws a fresh pattern at every call with `defense.patterns.draw_patterns`,
the defense's own sampler, and applies it with `defense.patterns.apply_patterns`:
sampling and applying are the two halves the ensemble, EOT-PGD and the adapters use.
Its arguments default to `DefenseConfig`'s (the challenge entry's: sizes [310, 331) on a
331 canvas, flips with probability 0.5, one pattern per batch) and are checked by it.

Known break: a layer that randomizes is no defense against an attacker who optimises
through it (EOT; Athalye, Carlini and Wagner, ICML 2018): see `defense.randomization`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from defense.config import DefenseConfig
from defense.patterns import apply_patterns, draw_patterns, make_generator

_DEFAULTS = DefenseConfig(name="RandomResizePad")


@keras.saving.register_keras_serializable(package="defense")
class RandomResizePad(keras.layers.Layer):
    """Keras layer drawing a fresh random pattern at every call (inference included).

    One pattern for the whole batch, as the NIPS 2017 entry did, or one per image
    with `per_image=True`. Its config holds the seed, so a saved and reloaded layer
    draws the same patterns (a layer made from a `generator` or from OS entropy has
    no seed to keep: `seed` is None in its config).
    """

    def __init__(
        self,
        low: int = _DEFAULTS.low,
        high: int = _DEFAULTS.high,
        out_size: int = _DEFAULTS.out_size,
        *,
        method: str = _DEFAULTS.method,
        per_image: bool = _DEFAULTS.per_image,
        flip_probability: float = _DEFAULTS.flip_probability,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.randomization = DefenseConfig(
            name="RandomResizePad",
            low=low,
            high=high,
            out_size=out_size,
            num_iterations=1,
            flip_probability=flip_probability,
            method=method,
            per_image=per_image,
        )
        self.seed = seed if generator is None else None
        self._generator = generator if generator is not None else make_generator(seed)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        # [N, H, W, 3] -> [N, out_size, out_size, 3]: one pattern per batch or per image.
        patterns = draw_patterns(self._generator, self.randomization, tf.shape(images)[0], 1)
        return apply_patterns(
            images, patterns, out_size=self.randomization.out_size, method=self.randomization.method
        )

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        size = self.randomization.out_size
        return (input_shape[0], size, size, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        randomization = self.randomization
        return {
            **super().get_config(),
            "low": randomization.low,
            "high": randomization.high,
            "out_size": randomization.out_size,
            "method": randomization.method,
            "per_image": randomization.per_image,
            "flip_probability": randomization.flip_probability,
            "seed": self.seed,
        }
