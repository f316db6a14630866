"""Strict assignment from a slim checkpoint: only finite floating-point weights are taken."""

import keras
import numpy as np
import pytest

from defense.models.checkpoint import CheckpointError, assign_from_checkpoint
from tests.support.slim_reference.checkpoint_writer import write_checkpoint


@pytest.fixture
def weights():
    return {
        "net/weights": keras.Variable(np.zeros((2, 3), np.float32)),
        "net/biases": keras.Variable(np.zeros(3, np.float32)),
    }


def values(**replaced):
    base = {
        "net/weights": np.arange(6, dtype=np.float32).reshape(2, 3),
        "net/biases": np.ones(3, np.float32),
    }
    return {**base, **{name.replace("__", "/"): value for name, value in replaced.items()}}


def test_float64_weights_are_cast_and_assigned(weights, tmp_path):
    prefix = write_checkpoint(
        tmp_path / "a.ckpt", values(net__biases=np.array([0.5, 1.5, 2.5], np.float64))
    )
    assign_from_checkpoint(weights, prefix)
    assert weights["net/biases"].numpy().tolist() == [0.5, 1.5, 2.5]
    assert weights["net/weights"].numpy()[1, 2] == 5


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (np.arange(6, dtype=np.int32).reshape(2, 3), r"not floating point: net/weights \(int32\)"),
        (np.array([[b"a", b"b", b"c"]] * 2), r"not floating point: net/weights \(string\)"),
        (np.full((2, 3), 1e300, np.float64), "net/weights holds NaN or infinite values"),
        (np.full((2, 3), np.nan, np.float32), "net/weights holds NaN or infinite values"),
    ],
    ids=["int32", "string", "float64-overflow", "nan"],
)
def test_non_float_or_non_finite_weights_are_refused(weights, tmp_path, stored, message):
    prefix = write_checkpoint(tmp_path / "bad.ckpt", values(net__weights=stored))
    with pytest.raises(CheckpointError, match=message):
        assign_from_checkpoint(weights, prefix)
    assert not weights["net/weights"].numpy().any()
