"""The digits CNN behind a small defense (4 patterns per classification), its first test
images and a tiny attack budget, shared by the robustness tests."""

import dataclasses

import numpy as np
import pytest

IMAGES = 30


@pytest.fixture(scope="session")
def small_defense():
    from tests.support.digits import DEFENSE

    return dataclasses.replace(DEFENSE, num_iterations=4)


@pytest.fixture(scope="session")
def sample(digits) -> tuple[np.ndarray, np.ndarray]:
    return digits.x_test[:IMAGES], digits.y_test[:IMAGES]


@pytest.fixture(scope="session")
def tiny_budget():
    """10 iterations of 4 EOT samples at 16 pixel units, judged over 3 redraws."""
    from attacks.robustness.protocol import Budget

    return Budget(epsilon=16.0, iterations=10, samples=4, redraws=3, judge_chunk_size=128)
