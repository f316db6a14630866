"""Shared fixtures: a generated slim Inception-ResNet-v2 checkpoint, written once per session.

TensorFlow is imported inside the fixtures so that tests which do not use them
start quickly.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def irv2_values() -> dict[str, np.ndarray]:
    """Deterministic test values of the 908 slim Inception-ResNet-v2 variables, by slim name."""
    from slim_reference.checkpoint_writer import deterministic_values
    from slim_reference.inception_resnet_v2 import variable_shapes

    return deterministic_values(variable_shapes())


@pytest.fixture(scope="session")
def irv2_checkpoint(
    irv2_values: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Prefix of a slim-format checkpoint holding `irv2_values`; use it as a checkpoint path."""
    from slim_reference.checkpoint_writer import write_checkpoint

    folder = tmp_path_factory.mktemp("irv2_checkpoint")
    return write_checkpoint(folder / "inception_resnet_v2.ckpt", irv2_values)


@pytest.fixture(scope="session")
def digits():
    """A small CNN trained on scikit-learn's digits (about half a minute), with test data."""
    from digits import train

    return train()
