"""The defense in the Adversarial Robustness Toolbox (ART, Trusted-AI, 1.20): the
randomization as ART preprocessing defences in front of a `TensorFlowV2Classifier`.

ART has no random resize-and-pad defence and no such Expectation-over-Transformation
(EoT) transform: `RandomizationPreprocessor` applies one fresh pattern per call
(per batch or per image, as the config says), and `EoTRandomizationPreprocessor`
draws `samples` patterns per image and returns N x samples images with their
labels repeated, as ART's own `EoTTensorFlowV2` transforms do. Both are
differentiable TensorFlow ops, run by the classifier inside the same
`GradientTape` as the model, so ART's gradient attacks (PGD, FGSM, ...) follow
the exact random draw; through the EoT preprocessor they follow the gradient of
the loss averaged over the patterns.

Inputs are images in [-1, 1], the model's own range (`clip_values=(-1, 1)`), so the
zero padding is the defense's (0 is gray there); convert [0, 1] images with
`x * 2 - 1` before handing them to ART. Labels are the model's logits columns: for
slim models slim labels, 0 = background and slim = ImageNet 0..999 + 1
(`defense.labels.imagenet_to_slim`), as indices [N] or one-hot rows [N, classes].
The classifier refuses other inputs (`defense.adapters.checks`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf
from art.defences.postprocessor import Postprocessor
from art.defences.preprocessor.preprocessor import PreprocessorTensorFlowV2
from art.estimators.classification import TensorFlowV2Classifier
from art.preprocessing.expectation_over_transformation.tensorflow import EoTTensorFlowV2
from scipy.special import log_softmax, logsumexp

from defense.adapters import logits_width
from defense.adapters.checks import check_image_size, check_images, check_labels
from defense.config import DefenseConfig
from defense.patterns import Pattern, apply_patterns, draw_patterns, make_generator

CLIP_VALUES = (-1.0, 1.0)


def seen_through(images: tf.Tensor, patterns: Pattern, config: DefenseConfig) -> tf.Tensor:
    """`images` [N, H, W, 3], image i through pattern i: flipped, resized and padded onto
    the config's canvas, or (a config that does not randomize) only flipped."""
    if config.randomize:
        return apply_patterns(images, patterns, out_size=config.out_size, method=config.method)
    return tf.where(patterns.flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


class RandomizationPreprocessor(PreprocessorTensorFlowV2):
    """The defense's randomization as an ART preprocessing defence: a fresh pattern per
    call, shared by the batch or (`config.per_image`) one per image.

    Applied at prediction only (`apply_fit=False`, `apply_predict=True`). Patterns come
    from `generator`, or one seeded with `seed`, or (default) one from OS entropy.
    """

    params: ClassVar[list[str]] = ["config"]

    def __init__(
        self,
        config: DefenseConfig,
        *,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)
        self.config = config
        self.generator = generator if generator is not None else make_generator(seed)

    def forward(self, x: tf.Tensor, y: Any = None) -> tuple[tf.Tensor, Any]:
        """`x` [N, H, W, 3] through one draw of patterns; `y` unchanged."""
        x = tf.convert_to_tensor(x, tf.float32)
        patterns = draw_patterns(self.generator, self.config, int(x.shape[0]), 1)
        return seen_through(x, patterns, self.config), y


class EoTRandomizationPreprocessor(EoTTensorFlowV2):
    """Expectation over the defense's patterns: each image through `samples` fresh
    patterns, image-major (image 0's samples first), labels repeated to match.

    ART's `EoTTensorFlowV2` transforms one image and one sample at a time; this
    draws every pattern of a call at once, as the defense does (`samples` per
    image, shared by the batch unless `config.per_image`), and resizes them in one
    op. A loss over the N x samples outputs is the EoT loss, its gradient the EoT
    gradient. Applied at prediction only.
    """

    params: ClassVar[list[str]] = ["nb_samples", "clip_values", "config"]

    def __init__(
        self,
        config: DefenseConfig,
        *,
        samples: int,
        generator: tf.random.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        super().__init__(nb_samples=samples, clip_values=CLIP_VALUES)
        self.config = config
        self.generator = generator if generator is not None else make_generator(seed)

    def _transform(self, x: tf.Tensor, y: Any, **kwargs: Any) -> tuple[tf.Tensor, Any]:
        """Items `x` [M, H, W, 3], item i through pattern i of `kwargs["patterns"]`."""
        return seen_through(x, kwargs["patterns"], self.config), y

    def forward(self, x: tf.Tensor, y: Any = None) -> tuple[tf.Tensor, Any]:
        """`x` [N, H, W, 3] as [N * samples, ...] patterned items; `y` repeated alike."""
        x = tf.convert_to_tensor(x, tf.float32)
        count, samples = int(x.shape[0]), self.nb_samples
        # draw_patterns is pattern-major ([samples, N] flattened); ART's EoT is image-major.
        patterns = Pattern(
            *(
                tf.reshape(tf.transpose(tf.reshape(field, [samples, count])), [-1])
                for field in draw_patterns(self.generator, self.config, count, samples)
            )
        )
        labels = None if y is None else tf.repeat(y, samples, axis=0)
        return self._transform(tf.repeat(x, samples, axis=0), labels, patterns=patterns)


class MeanOverPatterns(Postprocessor):
    """ART predictions of N x `samples` EoT rows back to N: the log of the mean softmax
    over each image's samples, logits of the averaged decision (argmax = the class
    with the highest mean probability, the defense's rule without an aux head)."""

    params: ClassVar[list[str]] = ["samples"]

    def __init__(self, samples: int) -> None:
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)
        self.samples = samples

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        logits = np.asarray(preds, np.float64).reshape(-1, self.samples, preds.shape[-1])
        mean = logsumexp(log_softmax(logits, axis=-1), axis=1) - np.log(self.samples)
        return mean.astype(preds.dtype)


class CheckedClassifier(TensorFlowV2Classifier):
    """A `TensorFlowV2Classifier` that checks its inputs before its preprocessing.

    Every ART entry point (`predict`, `loss_gradient`, `class_gradient`,
    `compute_loss`, ...) passes through `_apply_preprocessing`, so the checks sit
    there: images `x` [N, H, W, 3] of the classifier's `input_shape`, finite and within
    `clip_values`, any float dtype (cast to float32, differentiably for tensors);
    labels `y` as indices [N] or one-hot rows [N, classes], handed on one-hot, the
    form ART's loss takes.
    """

    def _apply_preprocessing(self, x: Any, y: Any, fit: bool = False) -> tuple[Any, Any]:
        """`x` and `y` checked and in the classifier's forms, then ART's preprocessing."""
        check_images(x, value_range=self.clip_values, shape=self.input_shape, parameter="x")
        is_tensor = isinstance(x, tf.Tensor)
        x = tf.cast(x, tf.float32) if is_tensor else np.asarray(x, np.float32)
        if y is not None:
            indices = check_labels(
                y, count=len(x), classes=self.nb_classes, parameter="y", one_hot=True
            )
            y = np.eye(self.nb_classes, dtype=np.float32)[indices]
            y = tf.constant(y) if is_tensor else y
        return super()._apply_preprocessing(x, y, fit=fit)

    def compute_loss(
        self,
        x: Any,
        y: Any,
        reduction: str = "none",
        training_mode: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """The loss per image of `x` (`reduction="none"`), or their mean or sum.

        Through the EoT preprocessor ART's loss has one row per pattern (N x samples,
        image-major); each image's rows are averaged into its EoT loss, so that
        attacks comparing per-image losses (ART's `AutoProjectedGradientDescent`)
        get one loss per image.
        """
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        rows = super().compute_loss(x, y, reduction="none", training_mode=training_mode, **kwargs)
        losses = rows.reshape(len(x), -1).mean(axis=1)
        return {"none": losses, "mean": losses.mean(), "sum": losses.sum()}[reduction]


def art_classifier(
    model: keras.Model,
    config: DefenseConfig,
    *,
    samples: int = 1,
    image_size: int = 299,
    seed: int | None = None,
) -> CheckedClassifier:
    """`model` behind the randomization of `config` as an ART `TensorFlowV2Classifier`
    that checks its inputs (`CheckedClassifier`).

    ART passes image_size x image_size images in [-1, 1] (`clip_values=(-1, 1)`);
    `nb_classes` is the width of the model's logits, so labels are the model's (slim
    labels for slim models: ImageNet 0..999 + 1). The loss is the sparse
    cross-entropy of the "logits" output only: ART's loss ignores the aux head and
    `config.aux_weight`. With `samples=1` the preprocessing defence is
    `RandomizationPreprocessor` (one fresh pattern per call); with more it is
    `EoTRandomizationPreprocessor`, and `predict` then returns one row per image,
    the log of the mean softmax over its samples (`MeanOverPatterns`), and
    `compute_loss` one loss per image, the mean over its samples.

    Run ART's `AutoProjectedGradientDescent` with `loss_type=None` (this loss, the
    cross-entropy): its `loss_type="cross_entropy"` rebuilds a plain
    `TensorFlowV2Classifier`, without these checks and with one loss per pattern,
    which fails through the EoT preprocessor.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    check_image_size(
        model,
        config,
        image_size,
        image_size,
        given=f"image_size={image_size}",
        parameter="image_size",
    )

    @tf.function(reduce_retracing=True)
    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return model(images, training=training)["logits"]

    preprocessor: PreprocessorTensorFlowV2
    postprocessors = []
    if samples == 1:
        preprocessor = RandomizationPreprocessor(config, seed=seed)
    else:
        preprocessor = EoTRandomizationPreprocessor(config, samples=samples, seed=seed)
        postprocessors.append(MeanOverPatterns(samples))
    return CheckedClassifier(
        model=logits,
        nb_classes=logits_width(model),
        input_shape=(image_size, image_size, 3),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=CLIP_VALUES,
        preprocessing_defences=[preprocessor],
        postprocessing_defences=postprocessors,
    )
