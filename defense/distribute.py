"""Running the ensemble on several devices: a `tf.distribute.MirroredStrategy` over GPUs.

The ensemble gives each replica whole chunks of (pattern, image) items, of the
same static shape as on one device, so every item is computed exactly as in a
one-device run and the labels are identical for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


class NoGPUError(RuntimeError):
    """A multi-GPU strategy was asked for where TensorFlow sees no GPU."""


def mirrored_strategy(devices: Sequence[str] | None = None) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over `devices`, by default every GPU TensorFlow sees.

    Raises NoGPUError when no device is given and no GPU is visible, rather than
    falling back silently to the CPU.
    """
    if devices is None:
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        if not devices:
            raise NoGPUError(
                "TensorFlow sees no GPU, so there is nothing to mirror over; run on one "
                "device (the default strategy) or on a machine with GPUs (set "
                "TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's CUDA messages)"
            )
    if not devices:
        raise ValueError("devices must name at least one device")
    return tf.distribute.MirroredStrategy(devices=list(devices))
