"""Random resizing and random zero-padding (Xie et al. 2018, Section 3.2.1).

A *pattern* is (size, top, left, flip): the image (flipped left-right when `flip`)
is resized to size x size and placed at (top, left) on an out_size x out_size
canvas of zeros. Resizing and padding are one gather per axis, so every pattern
has the same static output shape, a whole batch of different patterns runs as
one op, and gradients flow to the images.

`method="nearest"` is TF1's legacy nearest neighbour (`align_corners=False`,
`half_pixel_centers=False`: source index `floor(float32(i) * float32(in / size))`),
which the NIPS 2017 entry used; `method="bilinear"` matches TF2's
`tf.image.resize(..., "bilinear")` (half-pixel centres, no antialiasing).

Paper: C. Xie, J. Wang, Z. Zhang, Z. Ren, A. Yuille, "Mitigating Adversarial Effects
Through Randomization", ICLR 2018 (2nd of 110 in the NIPS 2017 defense challenge).

Known break: the defense holds against attacks that ignore it (the paper's
non-adaptive scenarios), not against an attacker who optimises through it.
Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False Sense of Security"
(ICML 2018, Section 5.2.2), averaged the gradient over about 30 random patterns per
step (Expectation over Transformation, EOT) and took randomized Inception-v3 to 0 %
accuracy at L-infinity 8/255. This project's EOT-PGD (`attacks.eot`) does the same
here: on the test digits CNN behind a 30-pattern ensemble, EOT-PGD at 24 pixel units
(10 steps of 6, 10 patterns per gradient) leaves 2 % accuracy, against 71 % after the
non-adaptive DeepFool set. Evaluate it honestly by reporting an adaptive EOT attack
beside the non-adaptive numbers, with the patterns drawn as the defense draws them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from defense.config import METHODS


def _axis_taps(
    in_size: int, size: tf.Tensor, offset: tf.Tensor, out_size: int, method: str
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None, tf.Tensor]:
    """Per output position: source indices, their weights, and whether it lies on the image."""
    position = tf.range(out_size, dtype=tf.int32)[None, :] - offset[:, None]
    inside = (position >= 0) & (position < size[:, None])
    scale = (tf.cast(in_size, tf.float32) / tf.cast(size, tf.float32))[:, None]
    position = tf.cast(position, tf.float32)
    if method == "nearest":
        source = tf.floor(position * scale)
        lower = tf.clip_by_value(tf.cast(source, tf.int32), 0, in_size - 1)
        return lower, None, None, inside
    source = (position + 0.5) * scale - 0.5
    floor = tf.floor(source)
    lower = tf.clip_by_value(tf.cast(floor, tf.int32), 0, in_size - 1)
    upper = tf.clip_by_value(tf.cast(tf.math.ceil(source), tf.int32), 0, in_size - 1)
    return lower, upper, source - floor, inside


def _along(values: tf.Tensor, axis: int) -> tf.Tensor:
    """Reshape [N, out] per-position values to broadcast against NHWC along `axis`."""
    return values[:, :, None, None] if axis == 1 else values[:, None, :, None]


def _resample_axis(
    images: tf.Tensor,
    in_size: int,
    size: tf.Tensor,
    offset: tf.Tensor,
    out_size: int,
    method: str,
    axis: int,
) -> tf.Tensor:
    lower, upper, fraction, inside = _axis_taps(in_size, size, offset, out_size, method)
    gathered = tf.gather(images, lower, axis=axis, batch_dims=1)
    if method == "bilinear":
        upper_values = tf.gather(images, upper, axis=axis, batch_dims=1)
        fraction = _along(tf.cast(fraction, images.dtype), axis)
        gathered = gathered + (upper_values - gathered) * fraction
    return tf.where(_along(inside, axis), gathered, tf.zeros([], images.dtype))


def resize_and_pad(
    images: tf.Tensor | np.ndarray,
    size: int | tf.Tensor,
    top: int | tf.Tensor,
    left: int | tf.Tensor,
    *,
    flip: bool | tf.Tensor = False,
    out_size: int = 331,
    method: str = "nearest",
) -> tf.Tensor:
    """Resize NHWC `images` to size x size, flip if asked, and zero-pad to out_size at (top, left).

    `size`, `top`, `left` and `flip` are scalars (one pattern for the batch) or
    [N] tensors (one pattern per image). Padding is 0 in model input space.
    Differentiable with respect to `images`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(f"images must be NHWC, got shape {images.shape}")
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError("images need a static height and width")
    count = tf.shape(images)[0]

    def per_image(value: int | bool | tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.broadcast_to(tf.cast(value, dtype), [count])

    size = per_image(size, tf.int32)
    top = per_image(top, tf.int32)
    left = per_image(left, tf.int32)
    flip = per_image(flip, tf.bool)
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    rows = _resample_axis(images, height, size, top, out_size, method, axis=1)
    return _resample_axis(rows, width, size, left, out_size, method, axis=2)
