"""The full defense as a robustml model (robustml 0.0.3, robust-ml/robustml).

`RobustMLModel.classify` takes one H x W x 3 image in [0, 1], maps it to the
models' [-1, 1] (`x * 2 - 1`, before the resize and the zero padding, so the
padding is the defense's gray), and returns the label of the whole randomized
ensemble (`RandomizedEnsemble`: `config.num_iterations` fresh patterns at every
call). Labels are the robustml dataset's, 0..labels-1: a model whose logits have
one column more than the dataset has labels is a slim model, whose column 0 is the
background, and its label is the best of the other columns (ImageNet 0..999 =
slim label - 1, `defense.labels`); a model with as many columns as labels (the
test digits CNN) keeps its labels as they are.

For white-box attacks, as robustml asks, `logits` gives the defense's differentiable
logits (the log of its mean score over the patterns, `RandomizedDefense(output=
"log_scores")`) and `loss_gradient` its EOT gradient, both in [0, 1] image units
and robustml labels.

Images are floats in [0, 1], as robustml's datasets define them: uint8 pixels, values
outside [0, 1], non-finite values, other shapes than the dataset's and labels other
than whole numbers in range are refused (`defense.adapters.checks`), never labelled.

robustml 0.0.3's metadata pins numpy < 2 and Pillow < 6, which TensorFlow 2.21 and
this package cannot use; its code runs with current ones, so install it with
`pip install --no-deps robustml==0.0.3`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import robustml
import tensorflow as tf

from defense.adapters import logits_width
from defense.adapters.checks import check_image_size, check_images, check_labels
from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.labels import imagenet_logits, imagenet_to_slim
from defense.randomized_defense import RandomizedDefense

COMPETITION_EPSILON = 16 / 255


class RobustMLModel(robustml.model.Model):
    """`model` behind the randomization of `config` as a robustml model.

    `dataset` defaults to `robustml.dataset.ImageNet((299, 299, 3))` (1000 labels);
    the threat model is `robustml.threat_model.Linf(epsilon)`, `epsilon` in [0, 1]
    units (the competition's 16/255 by default). Patterns come from one generator,
    seeded with `seed` or (default) from OS entropy, shared by `classify`, `logits`
    and `loss_gradient`, so every call draws fresh ones.
    """

    def __init__(
        self,
        model: keras.Model,
        config: DefenseConfig,
        *,
        dataset: robustml.dataset.Dataset | None = None,
        epsilon: float = COMPETITION_EPSILON,
        seed: int | None = None,
    ) -> None:
        if not (np.isfinite(epsilon) and 0 < epsilon <= 1):
            raise ValueError(f"epsilon must be in (0, 1] ([0, 1] image units), got {epsilon}")
        self._dataset = dataset if dataset is not None else robustml.dataset.ImageNet((299, 299, 3))
        shape = tuple(self._dataset.shape)
        if len(shape) != 3 or shape[-1] != 3:
            raise ParameterError(
                f"dataset must hold RGB images of shape (H, W, 3), got {shape}", "dataset"
            )
        check_image_size(
            model, config, shape[0], shape[1], given=f"dataset shape {shape}", parameter="dataset"
        )
        self._threat_model = robustml.threat_model.Linf(epsilon)
        labels, width = self._dataset.labels, logits_width(model)
        if width not in (labels, labels + 1):
            raise ValueError(
                f"dataset has {labels} labels but the model's logits have {width} columns: "
                f"need {labels}, or {labels + 1} with the background first"
            )
        self.background = width == labels + 1
        self.ensemble = RandomizedEnsemble(model, config, seed=seed)
        self.defense = RandomizedDefense(
            model, config, output="log_scores", generator=self.ensemble.generator
        )

    @property
    def dataset(self) -> robustml.dataset.Dataset:
        """What the model classifies: the image shape and the number of labels."""
        return self._dataset

    @property
    def threat_model(self) -> robustml.threat_model.Linf:
        """The perturbations an attack may make: L-infinity `epsilon` in [0, 1] units."""
        return self._threat_model

    def _check_images(self, x: Any, *, batched: bool) -> None:
        """Refuse images `x` other than floats in [0, 1] of the dataset's shape (after a
        batch axis when `batched`)."""
        check_images(
            x, value_range=(0.0, 1.0), shape=self._dataset.shape, parameter="x", batched=batched
        )

    def classify(self, x: np.ndarray) -> int:
        """The defense's label of one image in [0, 1], in the dataset's label space."""
        self._check_images(x, batched=False)
        image = np.asarray(x, np.float32)
        scores = self.ensemble.scores(image[None] * 2 - 1)
        if self.background:
            scores = imagenet_logits(scores)
        return int(np.argmax(scores[0]))

    def logits(self, x: Any) -> tf.Tensor:
        """Differentiable logits [N, labels] of a batch of [0, 1] images (a tensor, or an
        array): the log of the defense's mean score over a call's fresh patterns."""
        self._check_images(x, batched=True)
        images = tf.cast(x, tf.float32)
        log_scores = self.defense(images * 2 - 1)
        return imagenet_logits(log_scores) if self.background else log_scores

    def loss_gradient(self, x: Any, y: Any, *, samples: int | None = None) -> np.ndarray:
        """EOT gradient, in [0, 1] image units, of the cross-entropy of labels `y` (the
        dataset's) averaged over `samples` (default: the config's) fresh patterns."""
        self._check_images(x, batched=True)
        images = np.asarray(x, np.float32)
        labels = check_labels(y, count=len(images), classes=self._dataset.labels, parameter="y")
        labels = imagenet_to_slim(labels) if self.background else labels
        gradient = self.defense.loss_gradient(images * 2 - 1, labels, samples=samples)
        return 2 * gradient.numpy()
