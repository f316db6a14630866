"""The digits CNN behind a small defense (4 patterns per classification), its first test
images, a tiny attack budget and the card at tiny settings, shared by the robustness
tests."""

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


# The card's settings, tiny: 10 images, 3 iterations of 2 EOT samples, 2 redraws.
TINY_CARD = {
    "epsilon": 16,
    "redraws": 2,
    "iterations": 3,
    "samples": 2,
    "sweep_samples": (1, 2),
    "sweep_iterations": (2, 4),
    "cosine_samples": (1, 4),
    "epsilons": (16, 255),
    "judge_chunk_size": 128,
}


@pytest.fixture(scope="session")
def tiny_card():
    """The keyword arguments of `evaluate_robustness` at tiny settings."""
    return dict(TINY_CARD)


@pytest.fixture(scope="session")
def card(digits, small_defense, sample, tiny_card):
    """The card of the first 10 images at tiny settings, seed 0, computed in one go."""
    from attacks.robustness.card import evaluate_robustness

    images, labels = (a[:10] for a in sample)
    return evaluate_robustness(
        digits.model,
        small_defense,
        images,
        labels,
        seed=0,
        checkpoint_sha256="ab" * 32,
        **tiny_card,
    )
