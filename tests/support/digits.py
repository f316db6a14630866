"""The digits CNN (`defense.testing.digits`, where the benchmark finds it too) and the
tests' shared attack sets on it.

The definitions live in the package; this module re-exports them for the tests and
adds what only the tests use: the sizes of the shared DeepFool and C&W sets and the
plain model's accuracy.
"""

from __future__ import annotations

import keras
import numpy as np

from defense.testing.digits import (
    DEFENSE,
    INPUT_SIZE,
    NUM_CLASSES,
    OUT_SIZE,
    TEST_IMAGES,
    Digits,
    build_model,
    load_data,
    train,
)

__all__ = [
    "CW_FAST_ITERATIONS",
    "CW_IMAGES",
    "DEEPFOOL_IMAGES",
    "DEFENSE",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "OUT_SIZE",
    "TEST_IMAGES",
    "Digits",
    "accuracy",
    "build_model",
    "load_data",
    "train",
]

# The shared DeepFool and C&W sets: how many correctly classified test images each
# attacks, and C&W's Adam steps per constant (cleverhans' 1000 cut to 100: ten times
# faster, every image still fooled, median L2 about 5% above 1000 steps').
DEEPFOOL_IMAGES, CW_IMAGES, CW_FAST_ITERATIONS = 100, 40, 100


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of the plain model."""
    logits = model(images, training=False)["logits"]
    return float(np.mean(np.argmax(logits, axis=1) == labels))
