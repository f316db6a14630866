"""defense.testing: generated-weights checkpoints load with defense.models' strict slim
loader, and the digits CNN says what it needs when scikit-learn is missing."""

import sys

import numpy as np
import pytest

from defense import models
from defense.models.checkpoint import model_shapes, open_checkpoint
from defense.models.slim import slim_variables
from defense.testing import write_checkpoint, write_generated_checkpoint
from defense.testing.checkpoints import DEFAULT_MODEL
from defense.testing.weights import synthetic_value
from tests.support.slim_reference import checkpoint_writer

NAME = "InceptionV3/Conv2d_1a_3x3/weights"


def test_a_generated_checkpoint_loads_strictly_with_its_values(tmp_path):
    prefix = write_generated_checkpoint(tmp_path / "v3.ckpt", model="inception_v3", seed=1)
    assert prefix == str(tmp_path / "v3.ckpt")
    shapes = model_shapes(open_checkpoint(prefix))
    assert shapes == models.expected_shapes("inception_v3")
    model = models.load("inception_v3", prefix)
    weights = slim_variables(model)
    for name in (NAME, "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_variance"):
        expected = synthetic_value(name, shapes[name], seed=1)
        np.testing.assert_array_equal(weights[name].numpy(), expected)
        assert not np.array_equal(expected, synthetic_value(name, shapes[name], seed=0))


@pytest.mark.slow
def test_the_default_is_the_competition_model(tmp_path):
    """The GPU job's checkpoint: ens_adv_inception_resnet_v2, as the image looks for it."""
    assert DEFAULT_MODEL == "ens_adv_inception_resnet_v2"
    prefix = write_generated_checkpoint(tmp_path / "ens_adv_inception_resnet_v2.ckpt")
    model = models.load(DEFAULT_MODEL, prefix)
    assert len(slim_variables(model)) == models.get_spec(DEFAULT_MODEL).num_variables


def test_the_tests_reference_writer_writes_with_the_package(tmp_path):
    """The tests' reference values are written by the same `SaveV2` call, dtypes kept."""
    assert checkpoint_writer.write_checkpoint is write_checkpoint
    values = {"net/weights": np.arange(6.0).reshape(2, 3), "step": np.array(3, np.int64)}
    reader = open_checkpoint(write_checkpoint(tmp_path / "a.ckpt", values))
    assert reader.get_variable_to_dtype_map()["net/weights"].name == "float64"
    np.testing.assert_array_equal(reader.get_tensor("net/weights"), values["net/weights"])
    assert reader.get_tensor("step") == 3


def test_the_digits_cnn_says_scikit_learn_is_a_test_extra(monkeypatch):
    from defense.testing.digits import load_data

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delitem(sys.modules, "sklearn.datasets", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"scikit-learn.*pip install -e '\.\[test\]'"):
        load_data()
