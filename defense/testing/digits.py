"""A small CNN trained on scikit-learn's digits: a real model for the tests and the benchmark.

The 8x8 digits are upsampled to 32x32 RGB in [-1, 1]; the defense's randomization
is scaled to that size (sizes 32..35 padded to 36, as 299..330 to 331). Like
ImageNet models, the CNN is trained with small random rescaling and translation
(the defense's own patterns), without which randomization alone costs a small
model much of its clean accuracy. Fully convolutional with global pooling, it
accepts both 32x32 and 36x36 inputs.

scikit-learn (the data) is a test extra: `load_data` and `train` say so when it is
missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from defense.config import DefenseConfig
from defense.patterns import make_generator, sample_patterns
from defense.randomization import resize_and_pad

INPUT_SIZE, OUT_SIZE, NUM_CLASSES = 32, 36, 10
TEST_IMAGES = 300
DEFENSE = DefenseConfig(
    name="digits",
    low=INPUT_SIZE,
    high=OUT_SIZE,
    out_size=OUT_SIZE,
    num_iterations=30,
    flip_probability=0.0,
    aux_weight=0.0,
)
NO_SCIKIT_LEARN = (
    "the digits CNN needs scikit-learn for its data, a test extra: "
    "pip install -e '.[test]' (or pip install scikit-learn)"
)


@dataclass
class Digits:
    """The trained model and held-out data."""

    model: keras.Model
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of the digits as 32x32 RGB images in [-1, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ModuleNotFoundError(NO_SCIKIT_LEARN, name="sklearn") from error

    digits = load_digits()
    images = tf.image.resize(digits.images[..., None] / 16.0, [INPUT_SIZE, INPUT_SIZE], "bilinear")
    images = np.repeat(images.numpy() * 2.0 - 1.0, 3, axis=-1).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:TEST_IMAGES], order[TEST_IMAGES:]
    labels = digits.target.astype(np.int64)
    return images[train], labels[train], images[test], labels[test]


def build_model() -> keras.Model:
    """A four-conv CNN with global average pooling; outputs {"logits": [N, 10]}."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {"logits": keras.layers.Dense(NUM_CLASSES)(x)})


def _augment(images: tf.Tensor, generator: tf.random.Generator, out_size: int) -> tf.Tensor:
    """A random rescale and translation per image, onto an out_size canvas."""
    low = out_size - 4 if out_size == INPUT_SIZE else INPUT_SIZE - 2
    patterns = sample_patterns(
        generator, int(images.shape[0]), low=low, high=out_size + 1, out_size=out_size
    )
    return resize_and_pad(images, patterns.size, patterns.top, patterns.left, out_size=out_size)


def train(seed: int = 0, epochs: int = 12) -> Digits:
    """Train the CNN on plain 32x32 and randomized 36x36 batches, alternately."""
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = load_data(seed)
    model = build_model()
    optimizer = keras.optimizers.Adam(1e-3)
    generator = make_generator(seed)

    @tf.function(reduce_retracing=True)
    def step(images: tf.Tensor, labels: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits"]
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for i, start in enumerate(range(0, len(order) - 63, 64)):
            batch = order[start : start + 64]
            out_size = OUT_SIZE if i % 2 else INPUT_SIZE
            step(_augment(tf.constant(x_train[batch]), generator, out_size), y_train[batch])
    return Digits(model, x_test, y_test)
