"""Label spaces: slim 1..1000 (0 = background) against ImageNet 0..999, in one place."""

import subprocess
import sys

import numpy as np
import pytest

from defense import labels
from defense.labels import imagenet_logits, imagenet_to_slim, slim_to_imagenet


def test_slim_labels_are_imagenet_labels_plus_one():
    np.testing.assert_array_equal(slim_to_imagenet([1, 282, 1000]), [0, 281, 999])
    np.testing.assert_array_equal(imagenet_to_slim([0, 281, 999]), [1, 282, 1000])
    assert slim_to_imagenet(np.int64(813)).dtype == np.int64


def test_the_two_directions_are_inverse_over_every_class():
    every = np.arange(labels.IMAGENET_CLASSES)
    np.testing.assert_array_equal(slim_to_imagenet(imagenet_to_slim(every)), every)


def test_the_mapping_agrees_with_the_name_table():
    """ImageNet 281 is the tabby cat (Keras/torchvision order): slim 282 in the table."""
    assert labels.class_names()[int(imagenet_to_slim(281))].startswith("tabby")


def test_integer_valued_floats_are_labels():
    np.testing.assert_array_equal(slim_to_imagenet(np.array([3.0, 7.0])), [2, 6])


@pytest.mark.parametrize("bad", [0, [5, 0], 1001, -1])
def test_background_and_out_of_range_slim_labels_are_refused(bad):
    with pytest.raises(ValueError, match=r"labels must be slim .*1\.\.1000"):
        slim_to_imagenet(bad)


@pytest.mark.parametrize("bad", [-1, 1000, [3, 1000]])
def test_out_of_range_imagenet_labels_are_refused(bad):
    with pytest.raises(ValueError, match=r"labels must be ImageNet labels in 0\.\.999"):
        imagenet_to_slim(bad)


@pytest.mark.parametrize("bad", [[1.5], [True], ["3"], [np.nan]])
def test_non_integer_labels_are_refused(bad):
    with pytest.raises(ValueError, match="labels must be integer"):
        slim_to_imagenet(bad)


def test_imagenet_logits_drop_the_background_column():
    slim = np.arange(2 * 1001, dtype=np.float32).reshape(2, 1001)
    dropped = imagenet_logits(slim)
    assert isinstance(dropped, np.ndarray) and dropped.shape == (2, 1000)
    np.testing.assert_array_equal(dropped[:, 281], slim[:, 282])
    assert imagenet_logits(list(range(1001)))[0] == 1


@pytest.mark.parametrize("shape", [(2, 1000), (1002,), ()])
def test_imagenet_logits_need_1001_columns(shape):
    with pytest.raises(ValueError, match="slim_logits must have 1001 columns"):
        imagenet_logits(np.zeros(shape))


def test_imagenet_logits_of_a_tensor_stay_differentiable():
    import tensorflow as tf

    slim = tf.Variable(tf.random.stateless_normal([3, 1001], seed=[1, 2]))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(imagenet_logits(slim))
    gradient = tape.gradient(total, slim).numpy()
    assert (gradient[:, 0] == 0).all() and (gradient[:, 1:] == 1).all()


def test_the_conversions_do_not_import_tensorflow():
    code = (
        "import sys; from defense.labels import slim_to_imagenet; slim_to_imagenet([1]); "
        "assert 'tensorflow' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
