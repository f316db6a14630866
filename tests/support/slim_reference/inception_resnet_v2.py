"""Plain-TensorFlow forward pass of TF-Slim Inception-ResNet-v2 in inference mode.

Written from the slim scope structure with raw `tf.nn` ops and no code shared
with `defense`, so it is an independent check of the Keras model and of the
checkpoint loader. Every variable is fetched by its slim name through a
`get(name, shape)` callable: the same traversal records the variable manifest,
runs on generated values, or runs on the tensors of a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf

Getter = Callable[[str, tuple[int, ...]], np.ndarray | tf.Tensor]
AuxHead = Literal["entry", "tf_models"]

SCOPE = "InceptionResnetV2"
BN_EPSILON = 0.001
AUX_MAP_SIZE = 5  # the tf_models aux conv kernel covers the pooled map; its weights are 5x5


class _Layers:
    """slim.conv2d / slim.fully_connected arithmetic on variables fetched by name."""

    def __init__(self, get: Getter):
        self._get = get

    def variable(self, name: str, shape: tuple[int, ...]) -> tf.Tensor:
        value = tf.convert_to_tensor(self._get(name, shape), dtype=tf.float32)
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(value.shape)}")
        return value

    def conv(
        self,
        x: tf.Tensor,
        scope: str,
        filters: int,
        kernel: int | tuple[int, int],
        *,
        stride: int = 1,
        padding: str = "SAME",
        batch_norm: bool = True,
        relu: bool = True,
    ) -> tf.Tensor:
        """Convolution, then batch norm without gamma (or a bias), then optional ReLU."""
        height, width = (kernel, kernel) if isinstance(kernel, int) else kernel
        weights = self.variable(f"{scope}/weights", (height, width, int(x.shape[-1]), filters))
        y = tf.nn.conv2d(x, weights, strides=stride, padding=padding)
        if batch_norm:
            beta = self.variable(f"{scope}/BatchNorm/beta", (filters,))
            mean = self.variable(f"{scope}/BatchNorm/moving_mean", (filters,))
            variance = self.variable(f"{scope}/BatchNorm/moving_variance", (filters,))
            y = (y - mean) / tf.sqrt(variance + BN_EPSILON) + beta
        else:
            y = y + self.variable(f"{scope}/biases", (filters,))
        return tf.nn.relu(y) if relu else y

    def fully_connected(self, x: tf.Tensor, scope: str, units: int) -> tf.Tensor:
        """Affine layer with a 2-D `weights` matrix and `biases`, no activation."""
        weights = self.variable(f"{scope}/weights", (int(x.shape[-1]), units))
        return tf.matmul(x, weights) + self.variable(f"{scope}/biases", (units,))


def _residual(
    nn: _Layers, net: tf.Tensor, mixed: tf.Tensor, scope: str, scale: float, relu: bool
) -> tf.Tensor:
    up = nn.conv(mixed, f"{scope}/Conv2d_1x1", int(net.shape[-1]), 1, batch_norm=False, relu=False)
    net = net + scale * up
    return tf.nn.relu(net) if relu else net


def _block35(nn: _Layers, net: tf.Tensor, scope: str) -> tf.Tensor:
    tower_0 = nn.conv(net, f"{scope}/Branch_0/Conv2d_1x1", 32, 1)
    tower_1 = nn.conv(net, f"{scope}/Branch_1/Conv2d_0a_1x1", 32, 1)
    tower_1 = nn.conv(tower_1, f"{scope}/Branch_1/Conv2d_0b_3x3", 32, 3)
    tower_2 = nn.conv(net, f"{scope}/Branch_2/Conv2d_0a_1x1", 32, 1)
    tower_2 = nn.conv(tower_2, f"{scope}/Branch_2/Conv2d_0b_3x3", 48, 3)
    tower_2 = nn.conv(tower_2, f"{scope}/Branch_2/Conv2d_0c_3x3", 64, 3)
    mixed = tf.concat([tower_0, tower_1, tower_2], axis=3)
    return _residual(nn, net, mixed, scope, 0.17, relu=True)


def _block17(nn: _Layers, net: tf.Tensor, scope: str) -> tf.Tensor:
    tower_0 = nn.conv(net, f"{scope}/Branch_0/Conv2d_1x1", 192, 1)
    tower_1 = nn.conv(net, f"{scope}/Branch_1/Conv2d_0a_1x1", 128, 1)
    tower_1 = nn.conv(tower_1, f"{scope}/Branch_1/Conv2d_0b_1x7", 160, (1, 7))
    tower_1 = nn.conv(tower_1, f"{scope}/Branch_1/Conv2d_0c_7x1", 192, (7, 1))
    mixed = tf.concat([tower_0, tower_1], axis=3)
    return _residual(nn, net, mixed, scope, 0.10, relu=True)


def _block8(nn: _Layers, net: tf.Tensor, scope: str, scale: float, relu: bool) -> tf.Tensor:
    tower_0 = nn.conv(net, f"{scope}/Branch_0/Conv2d_1x1", 192, 1)
    tower_1 = nn.conv(net, f"{scope}/Branch_1/Conv2d_0a_1x1", 192, 1)
    tower_1 = nn.conv(tower_1, f"{scope}/Branch_1/Conv2d_0b_1x3", 224, (1, 3))
    tower_1 = nn.conv(tower_1, f"{scope}/Branch_1/Conv2d_0c_3x1", 256, (3, 1))
    mixed = tf.concat([tower_0, tower_1], axis=3)
    return _residual(nn, net, mixed, scope, scale, relu=relu)


def _stem(nn: _Layers, images: tf.Tensor) -> tf.Tensor:
    s = SCOPE
    net = nn.conv(images, f"{s}/Conv2d_1a_3x3", 32, 3, stride=2, padding="VALID")
    net = nn.conv(net, f"{s}/Conv2d_2a_3x3", 32, 3, padding="VALID")
    net = nn.conv(net, f"{s}/Conv2d_2b_3x3", 64, 3)
    net = tf.nn.max_pool2d(net, 3, 2, "VALID")
    net = nn.conv(net, f"{s}/Conv2d_3b_1x1", 80, 1, padding="VALID")
    net = nn.conv(net, f"{s}/Conv2d_4a_3x3", 192, 3, padding="VALID")
    return tf.nn.max_pool2d(net, 3, 2, "VALID")


def _mixed_5b(nn: _Layers, net: tf.Tensor) -> tf.Tensor:
    s = f"{SCOPE}/Mixed_5b"
    tower_0 = nn.conv(net, f"{s}/Branch_0/Conv2d_1x1", 96, 1)
    tower_1 = nn.conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 48, 1)
    tower_1 = nn.conv(tower_1, f"{s}/Branch_1/Conv2d_0b_5x5", 64, 5)
    tower_2 = nn.conv(net, f"{s}/Branch_2/Conv2d_0a_1x1", 64, 1)
    tower_2 = nn.conv(tower_2, f"{s}/Branch_2/Conv2d_0b_3x3", 96, 3)
    tower_2 = nn.conv(tower_2, f"{s}/Branch_2/Conv2d_0c_3x3", 96, 3)
    tower_3 = tf.nn.avg_pool2d(net, 3, 1, "SAME")
    tower_3 = nn.conv(tower_3, f"{s}/Branch_3/Conv2d_0b_1x1", 64, 1)
    return tf.concat([tower_0, tower_1, tower_2, tower_3], axis=3)


def _mixed_6a(nn: _Layers, net: tf.Tensor) -> tf.Tensor:
    s = f"{SCOPE}/Mixed_6a"
    tower_0 = nn.conv(net, f"{s}/Branch_0/Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID")
    tower_1 = nn.conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 256, 1)
    tower_1 = nn.conv(tower_1, f"{s}/Branch_1/Conv2d_0b_3x3", 256, 3)
    tower_1 = nn.conv(tower_1, f"{s}/Branch_1/Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID")
    tower_2 = tf.nn.max_pool2d(net, 3, 2, "VALID")
    return tf.concat([tower_0, tower_1, tower_2], axis=3)


def _mixed_7a(nn: _Layers, net: tf.Tensor) -> tf.Tensor:
    s = f"{SCOPE}/Mixed_7a"
    tower_0 = nn.conv(net, f"{s}/Branch_0/Conv2d_0a_1x1", 256, 1)
    tower_0 = nn.conv(tower_0, f"{s}/Branch_0/Conv2d_1a_3x3", 384, 3, stride=2, padding="VALID")
    tower_1 = nn.conv(net, f"{s}/Branch_1/Conv2d_0a_1x1", 256, 1)
    tower_1 = nn.conv(tower_1, f"{s}/Branch_1/Conv2d_1a_3x3", 288, 3, stride=2, padding="VALID")
    tower_2 = nn.conv(net, f"{s}/Branch_2/Conv2d_0a_1x1", 256, 1)
    tower_2 = nn.conv(tower_2, f"{s}/Branch_2/Conv2d_0b_3x3", 288, 3)
    tower_2 = nn.conv(tower_2, f"{s}/Branch_2/Conv2d_1a_3x3", 320, 3, stride=2, padding="VALID")
    tower_3 = tf.nn.max_pool2d(net, 3, 2, "VALID")
    return tf.concat([tower_0, tower_1, tower_2, tower_3], axis=3)


def _aux_logits(nn: _Layers, net: tf.Tensor, aux_head: AuxHead) -> tf.Tensor:
    s = f"{SCOPE}/AuxLogits"
    if aux_head == "entry":
        aux = tf.nn.avg_pool2d(net, 5, 3, "SAME")
        aux = nn.conv(aux, f"{s}/Conv2d_1b_1x1", 128, 1)
        aux = nn.conv(aux, f"{s}/Conv2d_2a_5x5", 768, 5, padding="VALID")
        aux = tf.reduce_mean(aux, axis=[1, 2])
    else:
        aux = tf.nn.avg_pool2d(net, 5, 3, "VALID")
        map_size = (int(aux.shape[1]), int(aux.shape[2]))
        if map_size != (AUX_MAP_SIZE, AUX_MAP_SIZE):
            raise ValueError(f"the tf_models aux head needs a 5x5 pooled map, got {map_size}")
        aux = nn.conv(aux, f"{s}/Conv2d_1b_1x1", 128, 1)
        aux = nn.conv(aux, f"{s}/Conv2d_2a_5x5", 768, map_size, padding="VALID")
        aux = tf.reshape(aux, [-1, 768])
    return nn.fully_connected(aux, f"{s}/Logits", 1001)


def forward(images: tf.Tensor, get: Getter, *, aux_head: AuxHead = "entry") -> dict[str, tf.Tensor]:
    """Logits and aux logits of slim Inception-ResNet-v2 for NHWC images in [-1, 1]."""
    if aux_head not in ("entry", "tf_models"):
        raise ValueError(f"unknown aux head {aux_head!r}")
    nn = _Layers(get)
    net = _mixed_5b(nn, _stem(nn, tf.convert_to_tensor(images, tf.float32)))
    for i in range(1, 11):
        net = _block35(nn, net, f"{SCOPE}/Repeat/block35_{i}")
    net = _mixed_6a(nn, net)
    for i in range(1, 21):
        net = _block17(nn, net, f"{SCOPE}/Repeat_1/block17_{i}")
    aux_logits = _aux_logits(nn, net, aux_head)
    net = _mixed_7a(nn, net)
    for i in range(1, 10):
        net = _block8(nn, net, f"{SCOPE}/Repeat_2/block8_{i}", 0.20, relu=True)
    net = _block8(nn, net, f"{SCOPE}/Block8", 1.0, relu=False)
    net = nn.conv(net, f"{SCOPE}/Conv2d_7b_1x1", 1536, 1)
    net = tf.reduce_mean(net, axis=[1, 2])
    logits = nn.fully_connected(net, f"{SCOPE}/Logits/Logits", 1001)
    return {"logits": logits, "aux_logits": aux_logits}


def variable_shapes(
    aux_head: AuxHead = "entry", image_size: int = 299
) -> dict[str, tuple[int, ...]]:
    """Every slim variable the network reads, with its shape, in traversal order.

    Found by tracing the forward pass symbolically (no arithmetic runs); a name
    fetched twice is an error, so the manifest is also a check of the traversal.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, shape: tuple[int, ...]) -> tf.Tensor:
        if name in shapes:
            raise ValueError(f"variable {name} fetched twice")
        shapes[name] = shape
        return tf.zeros(shape)

    spec = tf.TensorSpec([1, image_size, image_size, 3], tf.float32)
    traced = tf.function(lambda images: forward(images, record, aux_head=aux_head))
    traced.get_concrete_function(spec)
    return shapes
