"""ResNet-v2 (pre-activation) exactly as TF-Slim builds it, with slim variable names.

This is tf_slim's `resnet_v2` under `resnet_arg_scope()` in inference mode, with
global pooling: conv1 7x7/2 with biases and no norm, a 3x3/2 SAME max pool, then
blocks of bottleneck units that subsample in their last unit. Each unit
pre-activates its input (`preact`: batch norm with gamma, epsilon 1e-5, ReLU);
its shortcut is the subsampled input when the depth is unchanged, else a 1x1
conv with biases on the pre-activation. Strided 3x3 convs pad explicitly and
symmetrically (slim's `conv2d_same`), which differs from SAME padding on even
sizes. A final `postnorm` batch norm and ReLU, a global mean and a 1x1 `logits`
conv with biases end the net.

Shape comments (`# H x W x C`, as in slim's source) are for the default 299 x 299
input (the registry's default_image_size; at slim's nominal 224, conv1, pool1 and
block1..4 give 112, 56, 28, 14, 7 and 7 wide maps); the paper runs the nets on
331 x 331 canvases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import layers

from defense.models.slim import batch_norm, conv, layer_name

BN_EPSILON = 1e-5
DEPTH = 101
SCOPE = f"resnet_v2_{DEPTH}"


@dataclass(frozen=True)
class Block:
    """A slim resnet_v2 block: `num_units` bottleneck units, the stride on the last one."""

    scope: str
    base_depth: int
    num_units: int
    stride: int


# Network depth -> its blocks, as in tf_slim's resnet_v2_<depth> functions.
# Trailing comments: each block's output at the default 299 input (pool1: 75 x 75 x 64).
BLOCKS: dict[int, tuple[Block, ...]] = {
    101: (
        Block("block1", base_depth=64, num_units=3, stride=2),  # 38 x 38 x 256
        Block("block2", base_depth=128, num_units=4, stride=2),  # 19 x 19 x 512
        Block("block3", base_depth=256, num_units=23, stride=2),  # 10 x 10 x 1024
        Block("block4", base_depth=512, num_units=3, stride=1),  # 10 x 10 x 2048
    ),
}


def _conv2d_same(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, scope: str, **options: Any
) -> keras.KerasTensor:
    """slim's resnet_utils.conv2d_same: SAME at stride 1, else symmetric zero padding + VALID."""
    if stride == 1:
        return conv(x, filters, kernel, scope, **options)
    begin = (kernel - 1) // 2
    end = kernel - 1 - begin
    x = layers.ZeroPadding2D(((begin, end), (begin, end)), name=layer_name(f"{scope}/pad"))(x)
    return conv(x, filters, kernel, scope, strides=stride, padding="valid", **options)


def _bottleneck(
    net: keras.KerasTensor, scope: str, depth: int, depth_bottleneck: int, stride: int
) -> keras.KerasTensor:
    """slim's bottleneck_v2 unit."""
    norm = {"bn_scale": True, "bn_epsilon": BN_EPSILON}
    preact = batch_norm(net, f"{scope}/preact", scale=True, epsilon=BN_EPSILON)
    if depth == net.shape[-1]:
        shortcut = net
        if stride > 1:
            shortcut = layers.MaxPooling2D(
                1, stride, padding="same", name=layer_name(f"{scope}/shortcut")
            )(net)
    else:
        shortcut = conv(
            preact, depth, 1, f"{scope}/shortcut", strides=stride, batch_norm=False, activation=None
        )
    residual = conv(
        preact, depth_bottleneck, 1, f"{scope}/conv1", bn_scale=True, bn_epsilon=BN_EPSILON
    )
    residual = _conv2d_same(residual, depth_bottleneck, 3, stride, f"{scope}/conv2", **norm)
    residual = conv(residual, depth, 1, f"{scope}/conv3", batch_norm=False, activation=None)
    return layers.Add(name=layer_name(f"{scope}/add"))([shortcut, residual])


def _resnet_v2(depth: int, num_classes: int, input_size: int | None) -> keras.Model:
    scope = f"resnet_v2_{depth}"
    inputs = keras.Input((input_size, input_size, 3), name="images")
    # 299 x 299 x 3
    net = _conv2d_same(inputs, 64, 7, 2, f"{scope}/conv1", batch_norm=False, activation=None)
    # 150 x 150 x 64
    net = layers.MaxPooling2D(3, 2, padding="same", name=layer_name(f"{scope}/pool1"))(net)
    # 75 x 75 x 64
    for block in BLOCKS[depth]:
        for unit in range(1, block.num_units + 1):
            net = _bottleneck(
                net,
                f"{scope}/{block.scope}/unit_{unit}/bottleneck_v2",
                depth=4 * block.base_depth,
                depth_bottleneck=block.base_depth,
                stride=block.stride if unit == block.num_units else 1,
            )
        # 38 x 38 x 256, 19 x 19 x 512, 10 x 10 x 1024, 10 x 10 x 2048 after block1..4
    net = batch_norm(net, f"{scope}/postnorm", scale=True, epsilon=BN_EPSILON)
    # 10 x 10 x 2048
    net = layers.GlobalAveragePooling2D(keepdims=True, name=layer_name(f"{scope}/pool5"))(net)
    # 1 x 1 x 2048
    net = conv(net, num_classes, 1, f"{scope}/logits", batch_norm=False, activation=None)
    # 1 x 1 x 1001
    # float32 logits also under a mixed_bfloat16 policy.
    logits = layers.Reshape(
        (num_classes,), dtype="float32", name=layer_name(f"{scope}/SpatialSqueeze")
    )(net)
    # logits: 1001
    return keras.Model(inputs, {"logits": logits}, name=scope)


def build(*, num_classes: int = 1001, input_size: int | None = None) -> keras.Model:
    """ResNet-v2-101 mapping [-1, 1] NHWC images to {"logits": [N, num_classes]}.

    `input_size=None` accepts any spatial size; a fixed size gives static shapes
    (needed for FLOP counts).
    """
    return _resnet_v2(DEPTH, num_classes, input_size)
