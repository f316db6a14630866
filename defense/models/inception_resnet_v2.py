"""Inception-ResNet-v2 exactly as TF-Slim builds it, with slim variable names.

Structure, paddings, block scales (0.17, 0.10, 0.20) and the final block8 without
activation follow the slim definition used by the NIPS 2017 entry. Two AuxLogits
heads share the same variables:

- ``"entry"`` (default): the entry's copy of slim: 5x5/3 average pool with SAME
  padding, 1x1 conv to 128, fixed 5x5 VALID conv to 768, then an average over the
  remaining map (2x2 at 299 input, 3x3 at 331).
- ``"tf_models"``: later tensorflow/models: 5x5/3 VALID pool to a 5x5 map and a
  conv whose kernel covers that whole map. It needs a 5x5 pooled map, i.e.
  inputs of 299..361 pixels.

Shape comments (`# H x W x C`, as in slim's source) give the tensor at that point
for the default 299 x 299 input; the paper runs the nets on 331 x 331 canvases.
"""

from __future__ import annotations

from typing import Literal

import keras
from keras import layers

from defense.models.slim import conv, fully_connected, layer_name

SCOPE = "InceptionResnetV2"
AuxHead = Literal["entry", "tf_models"]
AUX_HEADS: tuple[str, ...] = ("entry", "tf_models")


def _concat(tensors: list[keras.KerasTensor], scope: str) -> keras.KerasTensor:
    return layers.Concatenate(axis=-1, name=layer_name(f"{scope}/concat"))(tensors)


def _residual(
    net: keras.KerasTensor, mixed: keras.KerasTensor, scope: str, scale: float, activation: bool
) -> keras.KerasTensor:
    channels = net.shape[-1]
    up = conv(mixed, channels, 1, f"{scope}/Conv2d_1x1", batch_norm=False, activation=None)
    up = layers.Rescaling(scale, name=layer_name(f"{scope}/scale"))(up)
    net = layers.Add(name=layer_name(f"{scope}/add"))([net, up])
    if activation:
        net = layers.Activation("relu", name=layer_name(f"{scope}/relu"))(net)
    return net


def _block35(
    net: keras.KerasTensor, scope: str, scale: float, activation: bool = True
) -> keras.KerasTensor:
    b0 = conv(net, 32, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, 32, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 32, 3, f"{scope}/Branch_1/Conv2d_0b_3x3")
    b2 = conv(net, 32, 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 48, 3, f"{scope}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, 64, 3, f"{scope}/Branch_2/Conv2d_0c_3x3")
    return _residual(net, _concat([b0, b1, b2], scope), scope, scale, activation)


def _block17(
    net: keras.KerasTensor, scope: str, scale: float, activation: bool = True
) -> keras.KerasTensor:
    b0 = conv(net, 192, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, 128, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 160, (1, 7), f"{scope}/Branch_1/Conv2d_0b_1x7")
    b1 = conv(b1, 192, (7, 1), f"{scope}/Branch_1/Conv2d_0c_7x1")
    return _residual(net, _concat([b0, b1], scope), scope, scale, activation)


def _block8(
    net: keras.KerasTensor, scope: str, scale: float, activation: bool = True
) -> keras.KerasTensor:
    b0 = conv(net, 192, 1, f"{scope}/Branch_0/Conv2d_1x1")
    b1 = conv(net, 192, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 224, (1, 3), f"{scope}/Branch_1/Conv2d_0b_1x3")
    b1 = conv(b1, 256, (3, 1), f"{scope}/Branch_1/Conv2d_0c_3x1")
    return _residual(net, _concat([b0, b1], scope), scope, scale, activation)


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


def _mixed_5b(net: keras.KerasTensor) -> keras.KerasTensor:
    s = f"{SCOPE}/Mixed_5b"
    b0 = conv(net, 96, 1, f"{s}/Branch_0/Conv2d_1x1")
    b1 = conv(net, 48, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 64, 5, f"{s}/Branch_1/Conv2d_0b_5x5")
    b2 = conv(net, 64, 1, f"{s}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 96, 3, f"{s}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, 96, 3, f"{s}/Branch_2/Conv2d_0c_3x3")
    b3 = layers.AveragePooling2D(
        3, 1, padding="same", name=layer_name(f"{s}/Branch_3/AvgPool_0a_3x3")
    )(net)
    b3 = conv(b3, 64, 1, f"{s}/Branch_3/Conv2d_0b_1x1")
    return _concat([b0, b1, b2, b3], s)


def _mixed_6a(net: keras.KerasTensor) -> keras.KerasTensor:
    s = f"{SCOPE}/Mixed_6a"
    b0 = conv(net, 384, 3, f"{s}/Branch_0/Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv(net, 256, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 256, 3, f"{s}/Branch_1/Conv2d_0b_3x3")
    b1 = conv(b1, 384, 3, f"{s}/Branch_1/Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(
        3, 2, padding="valid", name=layer_name(f"{s}/Branch_2/MaxPool_1a_3x3")
    )(net)
    return _concat([b0, b1, b2], s)


def _mixed_7a(net: keras.KerasTensor) -> keras.KerasTensor:
    s = f"{SCOPE}/Mixed_7a"
    b0 = conv(net, 256, 1, f"{s}/Branch_0/Conv2d_0a_1x1")
    b0 = conv(b0, 384, 3, f"{s}/Branch_0/Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = conv(net, 256, 1, f"{s}/Branch_1/Conv2d_0a_1x1")
    b1 = conv(b1, 288, 3, f"{s}/Branch_1/Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = conv(net, 256, 1, f"{s}/Branch_2/Conv2d_0a_1x1")
    b2 = conv(b2, 288, 3, f"{s}/Branch_2/Conv2d_0b_3x3")
    b2 = conv(b2, 320, 3, f"{s}/Branch_2/Conv2d_1a_3x3", strides=2, padding="valid")
    b3 = layers.MaxPooling2D(
        3, 2, padding="valid", name=layer_name(f"{s}/Branch_3/MaxPool_1a_3x3")
    )(net)
    return _concat([b0, b1, b2, b3], s)


def _aux_logits(net: keras.KerasTensor, num_classes: int, aux_head: AuxHead) -> keras.KerasTensor:
    s = f"{SCOPE}/AuxLogits"
    pool_padding = "same" if aux_head == "entry" else "valid"
    # 17 x 17 x 1088 (Repeat_1)
    aux = layers.AveragePooling2D(
        5, 3, padding=pool_padding, name=layer_name(f"{s}/Conv2d_1a_3x3")
    )(net)
    # 6 x 6 x 1088 ("entry"), 5 x 5 x 1088 ("tf_models")
    aux = conv(aux, 128, 1, f"{s}/Conv2d_1b_1x1")
    # 6 x 6 x 128 ("entry"), 5 x 5 x 128 ("tf_models")
    aux = conv(aux, 768, 5, f"{s}/Conv2d_2a_5x5", padding="valid")
    # 2 x 2 x 768 ("entry"), 1 x 1 x 768 ("tf_models")
    if aux_head == "entry":
        aux = layers.GlobalAveragePooling2D(name=layer_name(f"{s}/average_pool"))(aux)
    else:
        aux = layers.Reshape((768,), name=layer_name(f"{s}/Flatten"))(aux)
    # 768; Logits gives 1001
    return fully_connected(aux, num_classes, f"{s}/Logits")


def build(
    *, num_classes: int = 1001, aux_head: AuxHead = "entry", input_size: int | None = None
) -> keras.Model:
    """Inception-ResNet-v2 mapping [-1, 1] NHWC images to {"logits", "aux_logits"}.

    `input_size=None` accepts any spatial size the architecture admits (235 and up:
    the entry aux head's 5x5 VALID conv needs a 5x5 pooled map; 299..361 for the
    ``"tf_models"`` aux head).
    """
    if aux_head not in AUX_HEADS:
        raise ValueError(f"aux_head must be one of {AUX_HEADS}, got {aux_head!r}")
    inputs = keras.Input((input_size, input_size, 3), name="images")
    # 299 x 299 x 3; the stem gives 35 x 35 x 192
    net = _mixed_5b(_stem(inputs))
    # 35 x 35 x 320
    for i in range(1, 11):
        net = _block35(net, f"{SCOPE}/Repeat/block35_{i}", 0.17)
    # 35 x 35 x 320 after each block35 (Repeat)
    net = _mixed_6a(net)
    # 17 x 17 x 1088
    for i in range(1, 21):
        net = _block17(net, f"{SCOPE}/Repeat_1/block17_{i}", 0.10)
    # 17 x 17 x 1088 after each block17 (Repeat_1)
    aux_logits = _aux_logits(net, num_classes, aux_head)
    # aux_logits: 1001
    net = _mixed_7a(net)
    # 8 x 8 x 2080
    for i in range(1, 10):
        net = _block8(net, f"{SCOPE}/Repeat_2/block8_{i}", 0.20)
    # 8 x 8 x 2080 after each block8 (Repeat_2)
    net = _block8(net, f"{SCOPE}/Block8", 1.0, activation=False)
    # 8 x 8 x 2080
    net = conv(net, 1536, 1, f"{SCOPE}/Conv2d_7b_1x1")
    # 8 x 8 x 1536
    net = layers.GlobalAveragePooling2D(name=layer_name(f"{SCOPE}/Logits/AvgPool_1a_8x8"))(net)
    # 1536
    logits = fully_connected(net, num_classes, f"{SCOPE}/Logits/Logits")
    # logits: 1001
    return keras.Model(
        inputs, {"logits": logits, "aux_logits": aux_logits}, name="inception_resnet_v2"
    )
