"""Compute cost of a model: multiply-accumulates of its convolutions and dense layers."""

from __future__ import annotations

import keras
import numpy as np


def forward_flops(model: keras.Model) -> int:
    """FLOPs (2 x multiply-accumulates) of one image through a model with static input size."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.shape
            height, width = layer.output.shape[1:3]
            if height is None or width is None:
                raise ValueError("build the model with a fixed input size to count FLOPs")
            macs += int(np.prod(kernel)) * height * width
        elif isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 2 * macs
