"""Inception-v3 exactly as TF-Slim builds it for inference, with slim variable names.

This is tf_slim's `inception_v3` under `inception_v3_arg_scope()` with
is_training=False and the aux head: every conv is followed by batch norm without
gamma (epsilon 0.001) and ReLU, except the two 1x1 classifier convs, which have
biases. Layer scopes keep slim's irregular names (`Mixed_5c/Branch_1/Conv_1_0c_5x5`,
the 3x3 `Mixed_6a/.../Conv2d_1a_1x1`, `Mixed_7b/Branch_1/Conv2d_0b_3x1`).

Two main heads share the same variables:

- default: slim's `AvgPool_1a_8x8`, a fixed 8x8 VALID average pool with slim's
  default stride 2. For inputs of 299..330 pixels the Mixed_7c map is 8x8 and
  this is a global average; at 331..346 (9x9 map) it averages only the top-left
  8x8 cells.
- ``global_pool=True``: the mean over the whole map (later tensorflow/models).

Slim shrinks the aux conv kernel (and renames its variable) when the pooled aux
map is smaller than 5x5, and its final squeeze fails when the map is larger;
the checkpoints hold a 5x5 kernel, so the kernel here is fixed at 5x5 and the
network is defined exactly for inputs whose pooled aux map is 5x5: 299 to 346
pixels (`INPUT_SIZES`). In that range Mixed_7c is 8x8 or 9x9, so both heads give
one logit vector per image.

Shape comments (`# H x W x C`, as in slim's source) give the tensor at that point
for the default 299 x 299 input; the paper runs the nets on 331 x 331 canvases.
"""

from __future__ import annotations

import keras
from keras import layers

from defense.models.slim import conv, layer_name

SCOPE = "InceptionV3"
INPUT_SIZES = range(299, 347)


def _concat(tensors: list[keras.KerasTensor], scope: str) -> keras.KerasTensor:
    return layers.Concatenate(axis=-1, name=layer_name(f"{scope}/concat"))(tensors)


def _avg_pool_3x3(net: keras.KerasTensor, scope: str) -> keras.KerasTensor:
    return layers.AveragePooling2D(3, 1, padding="same", name=layer_name(scope))(net)


def _stem(net: keras.KerasTensor) -> keras.KerasTensor:
    s = SCOPE
    # 299 x 299 x 3
    net = conv(net, 32, 3, f"{s}/Conv2d_1a_3x3", strides=2, padding="valid")
    # 149 x 149 x 32
    net = conv(net, 32, 3, f"{s}/Conv2d_2a_3x3", padding="valid")
    # 147 x 147 x 32
    net = conv(net, 64, 3, f"{s}/Conv2d_2b_3x3")
    # 147 x 147 x 64
    net = layers.MaxPooling2D(3, 2, padding="valid", name=layer_name(f"{s}/MaxPool_3a_3x3"))(net)
    # 73 x 73 x 64
    net = conv(net, 80, 1, f"{s}/Conv2d_3b_1x1", padding="valid")
    # 73 x 73 x 80
    net = conv(net, 192, 3, f"{s}/Conv2d_4a_3x3", padding="valid")
    # 71 x 71 x 192
    return layers.MaxPooling2D(3, 2, padding="valid", name=layer_name(f"{s}/MaxPool_5a_3x3"))(net)


def _mixed_5(
    net: keras.KerasTensor, name: str, pool_filters: int, branch_1: tuple[str, str]
) -> keras.KerasTensor:
    """Mixed_5b/5c/5d: 1x1, 1x1 -> 5x5, 1x1 -> 3x3 -> 3x3, avg pool -> 1x1."""
    s = f"{SCOPE}/{name}"
    b0 = conv(net, 64, 1, f"{s}/Branch_0/Conv2d_0a_1x1")
    b1 = conv(net, 48, 1, f"{s}/Branch_1/{branch_1[0]}")
    b1 = conv(b1, 64, 5, f"{s}/Branch_1/{branch_1[1]}")
    b2 = conv(net, 64, 1, f"{s}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 96, 3, f"{s}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, 96, 3, f"{s}/Branch_2/Conv2d_0c_3x3")
    b3 = _avg_pool_3x3(net, f"{s}/Branch_3/AvgPool_0a_3x3")
    b3 = conv(b3, pool_filters, 1, f"{s}/Branch_3/Conv2d_0b_1x1")
    return _concat([b0, b1, b2, b3], s)


def _mixed_6a(net: keras.KerasTensor) -> keras.KerasTensor:
    s = f"{SCOPE}/Mixed_6a"
    b0 = conv(net, 384, 3, f"{s}/Branch_0/Conv2d_1a_1x1", strides=2, padding="valid")
    b1 = conv(net, 64, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 96, 3, f"{s}/Branch_1/Conv2d_0b_3x3")
    b1 = conv(b1, 96, 3, f"{s}/Branch_1/Conv2d_1a_1x1", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(
        3, 2, padding="valid", name=layer_name(f"{s}/Branch_2/MaxPool_1a_3x3")
    )(net)
    return _concat([b0, b1, b2], s)


def _mixed_6(net: keras.KerasTensor, name: str, width: int) -> keras.KerasTensor:
    """Mixed_6b..6e: factorised 7x7 branches of `width` channels inside, 192 out."""
    s = f"{SCOPE}/{name}"
    b0 = conv(net, 192, 1, f"{s}/Branch_0/Conv2d_0a_1x1")
    b1 = conv(net, width, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, width, (1, 7), f"{s}/Branch_1/Conv2d_0b_1x7")
    b1 = conv(b1, 192, (7, 1), f"{s}/Branch_1/Conv2d_0c_7x1")
    b2 = conv(net, width, 1, f"{s}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, width, (7, 1), f"{s}/Branch_2/Conv2d_0b_7x1")
    b2 = conv(b2, width, (1, 7), f"{s}/Branch_2/Conv2d_0c_1x7")
    b2 = conv(b2, width, (7, 1), f"{s}/Branch_2/Conv2d_0d_7x1")
    b2 = conv(b2, 192, (1, 7), f"{s}/Branch_2/Conv2d_0e_1x7")
    b3 = _avg_pool_3x3(net, f"{s}/Branch_3/AvgPool_0a_3x3")
    b3 = conv(b3, 192, 1, f"{s}/Branch_3/Conv2d_0b_1x1")
    return _concat([b0, b1, b2, b3], s)


def _mixed_7a(net: keras.KerasTensor) -> keras.KerasTensor:
    s = f"{SCOPE}/Mixed_7a"
    b0 = conv(net, 192, 1, f"{s}/Branch_0/Conv2d_0a_1x1")
    b0 = conv(b0, 320, 3, f"{s}/Branch_0/Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv(net, 192, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 192, (1, 7), f"{s}/Branch_1/Conv2d_0b_1x7")
    b1 = conv(b1, 192, (7, 1), f"{s}/Branch_1/Conv2d_0c_7x1")
    b1 = conv(b1, 192, 3, f"{s}/Branch_1/Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(
        3, 2, padding="valid", name=layer_name(f"{s}/Branch_2/MaxPool_1a_3x3")
    )(net)
    return _concat([b0, b1, b2], s)


def _mixed_7(net: keras.KerasTensor, name: str, branch_1_3x1: str) -> keras.KerasTensor:
    """Mixed_7b/7c: 1x1, 1x1 -> (1x3 | 3x1), 1x1 -> 3x3 -> (1x3 | 3x1), avg pool -> 1x1."""
    s = f"{SCOPE}/{name}"
    b0 = conv(net, 320, 1, f"{s}/Branch_0/Conv2d_0a_1x1")
    b1 = conv(net, 384, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = _concat(
        [
            conv(b1, 384, (1, 3), f"{s}/Branch_1/Conv2d_0b_1x3"),
            conv(b1, 384, (3, 1), f"{s}/Branch_1/{branch_1_3x1}"),
        ],
        f"{s}/Branch_1",
    )
    b2 = conv(net, 448, 1, f"{s}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 384, 3, f"{s}/Branch_2/Conv2d_0b_3x3")
    b2 = _concat(
        [
            conv(b2, 384, (1, 3), f"{s}/Branch_2/Conv2d_0c_1x3"),
            conv(b2, 384, (3, 1), f"{s}/Branch_2/Conv2d_0d_3x1"),
        ],
        f"{s}/Branch_2",
    )
    b3 = _avg_pool_3x3(net, f"{s}/Branch_3/AvgPool_0a_3x3")
    b3 = conv(b3, 192, 1, f"{s}/Branch_3/Conv2d_0b_1x1")
    return _concat([b0, b1, b2, b3], s)


def _classifier(net: keras.KerasTensor, num_classes: int, scope: str) -> keras.KerasTensor:
    """1x1 conv with biases on a 1x1 map, squeezed to [N, num_classes] in float32."""
    net = conv(net, num_classes, 1, scope, batch_norm=False, activation=None)
    return layers.Reshape(
        (num_classes,), dtype="float32", name=layer_name(f"{scope}/SpatialSqueeze")
    )(net)


def _aux_logits(net: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    s = f"{SCOPE}/AuxLogits"
    # 17 x 17 x 768 (Mixed_6e)
    aux = layers.AveragePooling2D(5, 3, padding="valid", name=layer_name(f"{s}/AvgPool_1a_5x5"))(
        net
    )
    # 5 x 5 x 768
    aux = conv(aux, 128, 1, f"{s}/Conv2d_1b_1x1")
    # 5 x 5 x 128
    aux = conv(aux, 768, 5, f"{s}/Conv2d_2a_5x5", padding="valid")
    # 1 x 1 x 768; Conv2d_2b_1x1 gives 1 x 1 x 1001, squeezed to 1001
    return _classifier(aux, num_classes, f"{s}/Conv2d_2b_1x1")


def _logits(net: keras.KerasTensor, num_classes: int, global_pool: bool) -> keras.KerasTensor:
    s = f"{SCOPE}/Logits"
    # 8 x 8 x 2048 (Mixed_7c)
    if global_pool:
        net = layers.GlobalAveragePooling2D(keepdims=True, name=layer_name(f"{s}/GlobalPool"))(net)
    else:
        net = layers.AveragePooling2D(
            8, 2, padding="valid", name=layer_name(f"{s}/AvgPool_1a_8x8")
        )(net)
    # 1 x 1 x 2048; Conv2d_1c_1x1 gives 1 x 1 x 1001, squeezed to 1001
    return _classifier(net, num_classes, f"{s}/Conv2d_1c_1x1")


def build(
    *, num_classes: int = 1001, global_pool: bool = False, input_size: int | None = None
) -> keras.Model:
    """Inception-v3 mapping [-1, 1] NHWC images to {"logits", "aux_logits"}.

    `global_pool=False` keeps slim's fixed 8x8 stride-2 average pool (only the
    top-left 8x8 cells from 331 pixels on); `True` averages the whole final map.
    `input_size=None` accepts any size at call time; only `INPUT_SIZES` work.
    """
    if input_size is not None and input_size not in INPUT_SIZES:
        raise ValueError(
            f"Inception-v3 with its 5x5 aux conv is defined for inputs of "
            f"{INPUT_SIZES.start}..{INPUT_SIZES.stop - 1} pixels, got {input_size}"
        )
    inputs = keras.Input((input_size, input_size, 3), name="images")
    # 299 x 299 x 3
    net = _stem(inputs)
    # 35 x 35 x 192
    net = _mixed_5(net, "Mixed_5b", 32, ("Conv2d_0a_1x1", "Conv2d_0b_5x5"))
    # 35 x 35 x 256
    net = _mixed_5(net, "Mixed_5c", 64, ("Conv2d_0b_1x1", "Conv_1_0c_5x5"))
    # 35 x 35 x 288
    net = _mixed_5(net, "Mixed_5d", 64, ("Conv2d_0a_1x1", "Conv2d_0b_5x5"))
    # 35 x 35 x 288
    net = _mixed_6a(net)
    # 17 x 17 x 768
    for name, width in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        net = _mixed_6(net, name, width)
    # 17 x 17 x 768 after each of Mixed_6b..6e
    aux_logits = _aux_logits(net, num_classes)
    # aux_logits: 1001
    net = _mixed_7a(net)
    # 8 x 8 x 1280
    net = _mixed_7(net, "Mixed_7b", "Conv2d_0b_3x1")
    # 8 x 8 x 2048
    net = _mixed_7(net, "Mixed_7c", "Conv2d_0c_3x1")
    # 8 x 8 x 2048
    logits = _logits(net, num_classes, global_pool)
    # logits: 1001
    return keras.Model(inputs, {"logits": logits, "aux_logits": aux_logits}, name="inception_v3")
