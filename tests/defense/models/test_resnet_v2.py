"""The Keras ResNet-v2-101 against tf_slim's own resnet_v2_101 graph, run live.

Both read the same generated slim checkpoint, written from the tf_slim graph's
variable manifest. The Keras model must reproduce tf_slim's logits at 299 and
331; a checkpoint with exchanged same-shaped tensors must visibly break that
agreement; a checkpoint that does not fit must be refused with its names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.models import resnet_v2
from defense.models.checkpoint import CheckpointError, assign_from_checkpoint
from defense.models.slim import layer_name, slim_variables
from tests.support.slim_reference import tf_slim_graphs
from tests.support.slim_reference.checkpoint_writer import (
    Edit,
    deterministic_values,
    unfit_edits,
    write_checkpoint,
)

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

S = resnet_v2.SCOPE
SIZES = (299, 331)

# Generated weights: slim's shared rules (gamma drawn from [0.8, 1.1]) with each
# residual branch's conv3 scaled by 0.3. Measured on the
# images below at 299 and 331: 0.6-1.2 rms after blocks 1-4, |logits| up to 2.2,
# and three different labels for three images. Gamma from [0.8, 1.6] makes the
# net explode (~250 rms after block 4, |logits| ~550, one label for all images);
# gamma from [0.6, 1.0] shrinks the logits to 0.8 and weakens the image dependence.
RESIDUAL_GAIN = 0.3

# Largest allowed |Keras - tf_slim| on any logit. Measured on these images and
# weights (|logits| <= 2.9) at 224, 299 and 331, and on the swapped checkpoints
# below against tf_slim run on the same swapped weights: at most 5.7e-6 (2.6e-6
# relative to the largest logit), float32 re-association noise. Exchanging one
# pair of same-shaped tensors (test_swapped_tensors_break_agreement) moves the
# logits by 0.51 to 2.8 against the original weights. 1e-3 is ~175x above the
# noise and ~500x below the smallest mistake measured.
TOL = 1e-3


def slim_graph(images: tf.Tensor) -> dict[str, tf.Tensor]:
    """tf_slim's resnet_v2_101 as the pretrained checkpoints were made: inference mode."""
    slim = tf_slim_graphs.tf_slim()
    from tf_slim.nets import resnet_v2 as slim_resnet_v2

    with slim.arg_scope(slim_resnet_v2.resnet_arg_scope()):
        logits, _ = slim_resnet_v2.resnet_v2_101(images, 1001, is_training=False)
    return {"logits": tf.squeeze(logits, [1, 2])}


def slim_logits(checkpoint: str, images: np.ndarray) -> np.ndarray:
    return tf_slim_graphs.run(slim_graph, checkpoint, images)["logits"]


def generated_values(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Deterministic test values for ResNet-v2 variables, scaled to keep activations sane."""
    values = deterministic_values(shapes)
    for name in values:
        if name.endswith("/conv3/weights"):
            values[name] *= RESIDUAL_GAIN
    return values


def colour_fields(size: int, count: int = 3, seed: int = 0) -> np.ndarray:
    """Deterministic image-like inputs in [-1, 1]: smooth random colour fields.

    Each image is a coarse random colour grid of its own resolution, upsampled,
    with its own colour cast and contrast, so images differ in their global
    statistics as photos do (which is what a globally pooled net responds to).
    """
    rng = np.random.default_rng([seed, size])
    images = []
    for cells in (2, 5, 11, 3, 7)[:count]:
        coarse = rng.uniform(-1.0, 1.0, (1, cells, cells, 3)).astype(np.float32)
        field = tf.image.resize(coarse, (size, size), method="bicubic").numpy()[0]
        images.append(rng.uniform(-0.5, 0.5, 3) + rng.uniform(0.3, 1.0) * field)
    return np.clip(np.stack(images), -1.0, 1.0).astype(np.float32)


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference; NaN or inf anywhere counts as infinite."""
    return float(np.nan_to_num(np.abs(got - want), nan=np.inf).max())


@pytest.fixture(scope="module")
def slim_shapes() -> dict[str, tuple[int, ...]]:
    """The variable manifest of tf_slim's resnet_v2_101 graph."""
    return tf_slim_graphs.variable_shapes(slim_graph, 299)


@pytest.fixture(scope="module")
def values(slim_shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return generated_values(slim_shapes)


@pytest.fixture(scope="module")
def checkpoint(values: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_checkpoint(tmp_path_factory.mktemp("resnet_v2") / "resnet_v2_101.ckpt", values)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """The Keras model for any input size, unloaded."""
    return resnet_v2.build()


@pytest.fixture(scope="module")
def loaded(model: keras.Model, checkpoint: str) -> keras.Model:
    assign_from_checkpoint(slim_variables(model), checkpoint)
    return model


@pytest.fixture(scope="module")
def scratch() -> keras.Model:
    """A second Keras model for tests that load other checkpoints into it."""
    return resnet_v2.build()


@pytest.fixture(scope="module")
def reference(checkpoint: str) -> Callable[[int], np.ndarray]:
    """tf_slim's logits on `colour_fields(size)` with the generated weights, run once per size."""
    return functools.cache(lambda size: slim_logits(checkpoint, colour_fields(size)))


def test_variable_manifest_matches_tf_slim(
    model: keras.Model, slim_shapes: dict[str, tuple[int, ...]]
):
    shapes = {name: tuple(weight.shape) for name, weight in slim_variables(model).items()}
    assert shapes == slim_shapes
    assert len(shapes) == 544
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == 44_677_609
    assert model.count_params() == 44_677_609


def test_spatial_sizes_at_299():
    model = resnet_v2.build(input_size=299)
    sizes = {
        "conv1": 150,
        "pool1": 75,
        "block1/unit_3/bottleneck_v2/add": 38,
        "block2/unit_4/bottleneck_v2/add": 19,
        "block3/unit_23/bottleneck_v2/add": 10,
        "block4/unit_3/bottleneck_v2/add": 10,
    }
    for scope, size in sizes.items():
        assert model.get_layer(layer_name(f"{S}/{scope}")).output.shape[1:3] == (size, size)
    assert model.output["logits"].shape[1:] == (1001,)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_keras_model_matches_tf_slim(
    size: int, loaded: keras.Model, reference: Callable[[int], np.ndarray]
):
    want = reference(size)
    got = np.asarray(loaded(colour_fields(size))["logits"])
    assert max_abs_diff(got, want) <= TOL
    # The generated weights must make the comparison meaningful: sane logits whose
    # label depends on the image.
    assert 0.5 <= np.abs(want).max() <= 20
    assert len(set(want.argmax(axis=1))) > 1


SWAPS = {
    "conv2_between_units": (
        f"{S}/block3/unit_5/bottleneck_v2/conv2/weights",
        f"{S}/block3/unit_6/bottleneck_v2/conv2/weights",
    ),
    "preact_gamma_variance": (
        f"{S}/block2/unit_2/bottleneck_v2/preact/gamma",
        f"{S}/block2/unit_2/bottleneck_v2/preact/moving_variance",
    ),
    "conv_mean_variance": (
        f"{S}/block1/unit_2/bottleneck_v2/conv1/BatchNorm/moving_mean",
        f"{S}/block1/unit_2/bottleneck_v2/conv1/BatchNorm/moving_variance",
    ),
    "postnorm_mean_variance": (f"{S}/postnorm/moving_mean", f"{S}/postnorm/moving_variance"),
}


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), SWAPS.values(), ids=list(SWAPS))
def test_swapped_tensors_break_agreement(
    first: str,
    second: str,
    values: dict[str, np.ndarray],
    scratch: keras.Model,
    reference: Callable[[int], np.ndarray],
    tmp_path: Path,
):
    """A loader that mixed up same-shaped tensors would fail the tf_slim comparison."""
    assert values[first].shape == values[second].shape
    swapped = {**values, first: values[second], second: values[first]}
    prefix = write_checkpoint(tmp_path / "swapped.ckpt", swapped)
    assign_from_checkpoint(slim_variables(scratch), prefix)
    got = np.asarray(scratch(colour_fields(299))["logits"])
    assert max_abs_diff(got, reference(299)) > 100 * TOL


MISSING = f"{S}/block3/unit_23/bottleneck_v2/conv3/biases"
UNEXPECTED = f"{S}/block4/unit_4/bottleneck_v2/conv3/biases"
MIS_SHAPED = f"{S}/block2/unit_1/bottleneck_v2/shortcut/weights"
UNFIT = unfit_edits(MISSING, UNEXPECTED, (2048,), MIS_SHAPED, (1, 1, 512, 256))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "edit"), UNFIT.values(), ids=list(UNFIT))
def test_unfit_checkpoint_is_refused_by_name(
    name: str,
    edit: Edit,
    values: dict[str, np.ndarray],
    scratch: keras.Model,
    tmp_path: Path,
):
    prefix = write_checkpoint(tmp_path / "unfit.ckpt", edit(values))
    with pytest.raises(CheckpointError) as caught:
        assign_from_checkpoint(slim_variables(scratch), prefix)
    assert name in str(caught.value)
