"""Checks of what the ART, foolbox and robustml adapters are given, in one place.

The defense resizes whatever it is handed and the classifier labels it, so an
image batch in [0, 255], of NaNs, channels first or of one channel, or labels
that are fractional or out of range, would otherwise come back as labels,
gradients or bare graph errors. Each adapter calls these before the defense runs,
naming its own parameter in the `ParameterError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from defense.common.errors import ParameterError
from defense.config import DefenseConfig

# How far past the range values may go, as a fraction of its width: float rounding.
RANGE_TOLERANCE = 1e-3


def _check_finite(array: np.ndarray, parameter: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        raise ParameterError(
            f"{parameter} must be finite, found {array.size - np.count_nonzero(finite)} "
            "NaN or infinite values",
            parameter,
        )


def check_images(
    images: Any,
    *,
    value_range: tuple[float, float],
    shape: Sequence[int],
    parameter: str,
    batched: bool = True,
) -> None:
    """Refuse `images` (an array or an eager tensor) that are not floating-point values
    in `value_range` (within `RANGE_TOLERANCE` of its width), not finite, or not of
    `shape` [H, W, C] after a batch axis (`batched`) of at least one image."""
    array = np.asarray(images)
    low, high = value_range
    if not np.issubdtype(array.dtype, np.floating):
        raise ParameterError(
            f"{parameter} must hold floating-point values in [{low:g}, {high:g}], "
            f"got {array.dtype} (map [0, 255] pixels with {_from_pixels(low, high)})",
            parameter,
        )
    expected = tuple(shape)
    if array.shape[int(batched) :] != expected or array.ndim != len(expected) + batched:
        what = "a batch of images of shape [N, " if batched else "one image of shape ["
        raise ParameterError(
            f"{parameter} must be {what}{', '.join(map(str, expected))}], "
            f"got shape {array.shape}{_layout_hint(array.shape, expected, batched)}",
            parameter,
        )
    if array.size == 0:
        raise ParameterError(f"{parameter} must hold at least one image, got none", parameter)
    _check_finite(array, parameter)
    found_low, found_high = float(array.min()), float(array.max())
    tolerance = RANGE_TOLERANCE * (high - low)
    if found_low < low - tolerance or found_high > high + tolerance:
        pixels = (
            f", which look like [0, 255] pixels: map them with {_from_pixels(low, high)}"
            if found_high > 1.5 and high <= 1
            else ""
        )
        raise ParameterError(
            f"{parameter} must hold values in [{low:g}, {high:g}], "
            f"found values in [{found_low:g}, {found_high:g}]{pixels}",
            parameter,
        )


def _from_pixels(low: float, high: float) -> str:
    """The expression mapping [0, 255] pixels onto [low, high], for messages."""
    width = high - low
    scaled = "pixels / 255" if width == 1 else f"pixels / 255 * {width:g}"
    if low == 0:
        return scaled
    return f"{scaled} {'-' if low < 0 else '+'} {abs(low):g}"


def _layout_hint(found: tuple[int, ...], expected: tuple[int, ...], batched: bool) -> str:
    """What a shape of the right rank but the wrong layout looks like, for messages."""
    if len(found) != len(expected) + batched:
        return ""
    channels = expected[-1]
    if found[int(batched)] == channels and found[-1] != channels:
        axes = "(0, 2, 3, 1)" if batched else "(1, 2, 0)"
        return f": channels first, transpose to channels last with axes {axes}"
    if found[-1] == 1 and channels == 3:
        return ": one channel, repeat a grayscale channel 3 times on the last axis"
    return ""


def check_labels(
    labels: Any, *, count: int, classes: int, parameter: str, one_hot: bool = False
) -> np.ndarray:
    """`labels` as int64 class indices [count]: whole numbers in [0, classes) of shape
    [count], or with `one_hot` also rows [count, classes], taken by their argmax as
    ART's own classifiers take them."""
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ParameterError(f"{parameter} must hold numbers, got {array.dtype}", parameter)
    _check_finite(array, parameter)
    if one_hot and array.shape == (count, classes):
        return np.argmax(array, axis=1).astype(np.int64)
    if array.shape != (count,):
        shapes = (
            f"[{count}] or one-hot labels of shape [{count}, {classes}]"
            if one_hot
            else f"[{count}]"
        )
        raise ParameterError(
            f"{parameter} must be index labels of shape {shapes}, one per image, "
            f"got shape {array.shape}",
            parameter,
        )
    fractional = array[array != np.round(array)]
    if fractional.size:
        raise ParameterError(
            f"{parameter} must be whole-number labels, found {fractional[0]:g}", parameter
        )
    outside = array[(array < 0) | (array >= classes)]
    if outside.size:
        raise ParameterError(
            f"{parameter} must be labels in [0, {classes - 1}], found {outside[0]:g}", parameter
        )
    return array.astype(np.int64)


def check_image_size(
    model: Any, config: DefenseConfig, height: int, width: int, *, given: str, parameter: str
) -> None:
    """Refuse images of `height` x `width` (described as `given`) that `config` hands to a
    Keras `model` of fixed input size at another size: the model could not run them."""
    seen = (config.model_input_size(height), config.model_input_size(width))
    takes = tuple(model.input_shape[1:3])
    if any(size is not None and size != got for size, got in zip(takes, seen, strict=True)):
        raise ParameterError(
            f"{given} gives the model {seen[0]}x{seen[1]} inputs under config "
            f"{config.name!r}, but it takes {takes[0]}x{takes[1]}",
            parameter,
        )
