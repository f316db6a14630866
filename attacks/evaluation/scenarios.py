"""The paper's attack scenarios (Sections 4.3-4.6) as target models for the attacks.

A scenario fixes the image size the attacker works on, the patterns the attacker
optimises through (none: the plain model), and what the defense does at test
time (a fresh random pattern, or a fixed one for the diagnostics of Section 4.6).
Sizes scale with (input_size, out_size) so the same scenarios apply to small
test models; the paper's values are 299 and 331.

Ensembles of patterns are attacked through their mean logits: FGSM, PGD,
DeepFool and C&W all see one classifier whose logits are the average over the
patterns. Target-model accuracy counts correctly classified patterns over all
patterns, as the paper's Table 4 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from attacks.evaluation.protocol import SCENARIOS
from defense.patterns import Pattern, outputs_through


@dataclass(frozen=True)
class Scenario:
    """What the attacker optimises through and what the defense then does."""

    name: str
    input_size: int
    out_size: int
    target_patterns: tuple[Pattern, ...] | None
    defense_patterns: tuple[Pattern, ...] | None

    @property
    def randomized_defense(self) -> bool:
        """True when the defense draws random patterns (Sections 4.3-4.5)."""
        return self.defense_patterns is None


def _corners_and_centre(size: int, out_size: int) -> list[Pattern]:
    span = out_size - size
    places = [(0, 0), (0, span), (span, 0), (span, span), (span // 2, span // 2)]
    return list(dict.fromkeys(Pattern(size, top, left) for top, left in places))


def build_scenario(name: str, *, input_size: int = 299, out_size: int = 331) -> Scenario:
    """Scenario `name` for images of input_size padded to out_size (299 -> 331 in the paper)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}")
    if not 0 < input_size < out_size:
        raise ValueError(f"need 0 < input_size < out_size, got {input_size} and {out_size}")
    if name == "vanilla":
        return Scenario(name, input_size, out_size, None, None)
    if name == "single_pattern":
        margin = (out_size - input_size) // 2
        return Scenario(name, input_size, out_size, (Pattern(input_size, margin, margin),), None)
    if name == "ensemble_pattern":
        scales = np.rint(np.linspace(input_size, out_size, 5)).astype(int)
        patterns = [p for size in scales for p in _corners_and_centre(int(size), out_size)]
        return Scenario(name, input_size, out_size, tuple(patterns), None)
    small = out_size - 1
    if name == "one_pixel_padding":
        target = (Pattern(small, 0, 0), Pattern(small, 0, 1), Pattern(small, 1, 0))
        return Scenario(name, small, out_size, target, (Pattern(small, 1, 1),))
    return Scenario(name, small, out_size, None, (Pattern(out_size, 0, 0),))


class TargetModel:
    """A model behind a fixed set of patterns (or none), seen as one classifier."""

    def __init__(
        self,
        model: keras.Model,
        patterns: tuple[Pattern, ...] | None,
        *,
        out_size: int,
        method: str = "nearest",
    ) -> None:
        self.model = model
        self.patterns = patterns
        self.out_size = out_size
        self.method = method

    @property
    def num_patterns(self) -> int:
        """How many patterns each image is seen through (1 for the plain model)."""
        return 1 if self.patterns is None else len(self.patterns)

    def pattern_logits(self, images: tf.Tensor) -> tf.Tensor:
        """Logits per pattern, [patterns, N, classes], in one batched forward pass."""
        images = tf.convert_to_tensor(images, tf.float32)
        if self.patterns is None:
            return _logits(self.model(images, training=False))[None]
        count = tf.shape(images)[0]
        tiled = tf.tile(images, [len(self.patterns), 1, 1, 1])
        patterns = Pattern(*(tf.repeat(field, count) for field in Pattern.stack(self.patterns)))
        outputs = outputs_through(
            self.model, tiled, patterns, out_size=self.out_size, method=self.method
        )
        return tf.reshape(_logits(outputs), [len(self.patterns), count, -1])

    def logits(self, images: tf.Tensor) -> tf.Tensor:
        """Mean logits over the patterns: the ensemble as one classifier."""
        return tf.reduce_mean(self.pattern_logits(images), axis=0)

    def correct_patterns(self, images: tf.Tensor, labels: npt.ArrayLike) -> np.ndarray:
        """Per image, how many patterns classify it correctly."""
        predictions = tf.argmax(self.pattern_logits(images), axis=-1).numpy()
        return (predictions == np.asarray(labels)[None, :]).sum(axis=0)


def _logits(outputs: Mapping[str, tf.Tensor] | tf.Tensor) -> tf.Tensor:
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs
    return tf.cast(logits, tf.float32)


def target_model(model: keras.Model, scenario: Scenario, *, method: str = "nearest") -> TargetModel:
    """The model the attacker optimises against in `scenario`."""
    return TargetModel(model, scenario.target_patterns, out_size=scenario.out_size, method=method)


def fixed_defense_model(
    model: keras.Model, scenario: Scenario, *, method: str = "nearest"
) -> TargetModel:
    """The defense of a diagnostic scenario (Section 4.6), whose patterns are fixed."""
    if scenario.defense_patterns is None:
        raise ValueError(
            f"scenario {scenario.name} uses the randomized defense, not fixed patterns"
        )
    return TargetModel(model, scenario.defense_patterns, out_size=scenario.out_size, method=method)
