"""Shared fixtures, built once per session: a generated slim Inception-ResNet-v2
checkpoint, the trained digits CNN, and its DeepFool and C&W adversarial sets (used
both by the attack tests and by the paper-claims tests).

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


@pytest.fixture(scope="session")
def digits_target(digits):
    """The vanilla scenario's target model: the undefended digits CNN, as a logits function."""
    from digits import INPUT_SIZE, OUT_SIZE

    from attacks.scenarios import build_scenario, target_model

    scenario = build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    return target_model(digits.model, scenario).logits


@pytest.fixture(scope="session")
def digits_correct(digits, digits_target) -> tuple[np.ndarray, np.ndarray]:
    """The test images the CNN classifies correctly (the paper attacks only those), and labels."""
    keep = np.argmax(digits_target(digits.x_test).numpy(), axis=1) == digits.y_test
    return digits.x_test[keep], digits.y_test[keep]


@pytest.fixture(scope="session")
def deepfool_run(digits_target, digits_correct):
    """Images, labels, DeepFool examples and per-example steps, at the paper's settings."""
    from digits import DEEPFOOL_IMAGES

    from attacks.deepfool import deepfool_with_steps

    images, labels = (a[:DEEPFOOL_IMAGES] for a in digits_correct)
    adversarial, steps = deepfool_with_steps(digits_target, images)
    return images, labels, adversarial.numpy(), steps.numpy()


@pytest.fixture(scope="session")
def cw_run(digits_target, digits_correct):
    """Images, labels and untargeted C&W examples with the digits tests' shortened schedule."""
    from digits import CW_FAST_ITERATIONS, CW_IMAGES

    from attacks.carlini_wagner import carlini_wagner_l2

    images, labels = (a[:CW_IMAGES] for a in digits_correct)
    adversarial = carlini_wagner_l2(
        digits_target, images, labels, max_iterations=CW_FAST_ITERATIONS
    )
    return images, labels, adversarial.numpy()
