"""The Keras Inception-v3 against tf_slim's own `inception_v3` graph, live.

Both read one generated slim checkpoint, written from the variable manifest of
tf_slim's graph. The Keras model must reproduce tf_slim's logits and aux logits
at 299 and 331 pixels, with slim's fixed 8x8 stride-2 head and with global
pooling; exchanged same-shaped tensors must visibly break that agreement, and a
checkpoint that does not fit must be refused with the offending name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.models import inception_v3
from defense.models.checkpoint import CheckpointError, assign_from_checkpoint
from defense.models.slim import slim_variables
from tests.support.slim_reference.checkpoint_writer import (
    Edit,
    deterministic_values,
    unfit_edits,
    write_checkpoint,
)
from tests.support.slim_reference.tf_slim_graphs import run, tf_slim, variable_shapes

S = inception_v3.SCOPE
# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`layer.apply` is deprecated:UserWarning"),
    pytest.mark.xdist_group(__name__),
]
SIZES = (299, 331)

# Largest allowed |Keras - tf_slim| on any logit or aux logit. Measured on these
# images and weights (|logits| <= 8.3, |aux logits| <= 5.2), 299 and 331, both
# heads: at most 1.8e-4 on logits and 7.5e-5 on aux logits (2.5e-5 relative to
# the largest logit). That is float32 rounding amplified by the deep plain stack:
# tf_slim's own logits move by 1.75e-4 when its input changes by one ulp. Real
# mistakes move the outputs far more: batch-norm epsilon 1e-5 instead of 1e-3 by
# 0.19, the whole-map pool instead of the top-left 8x8 one at 331 by 1.5, a
# one-pixel shift by 2.9, the exchanged pairs below by 3.4 to 23. 2e-3 is ~10x
# above the noise and ~100x below the smallest mistake.
TOL = 2e-3

# deterministic_values' batch-norm means (0.02..0.3, with variances near 1) make
# this plain, non-residual stack lose its signal: Mixed_7c falls to rms 0.03 and
# the logits barely depend on the image. Scaling the means by 0.1 keeps
# activations at rms 1-3 and every output clearly image-dependent; means and
# variances stay far apart, so exchanging them is still a gross error.
MEAN_SCALE = 0.1


def slim_graph(images: tf.Tensor) -> dict[str, tf.Tensor]:
    """tf_slim's inception_v3 at inference, plus two other heads on its Mixed_7c map.

    tf_slim 1.1.0 has no `global_pool` option, so the whole-map mean and the
    top-left 8x8 mean are fed through slim's own logits weights here.
    """
    slim = tf_slim()
    net = importlib.import_module("tf_slim.nets.inception_v3")
    with slim.arg_scope(net.inception_v3_arg_scope()):
        logits, end_points = net.inception_v3(images, num_classes=1001, is_training=False)
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    weights = variables[f"{S}/Logits/Conv2d_1c_1x1/weights"]
    biases = variables[f"{S}/Logits/Conv2d_1c_1x1/biases"]

    def classify(features: tf.Tensor) -> tf.Tensor:
        pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        return tf.squeeze(tf.nn.conv2d(pooled, weights, 1, "VALID"), [1, 2]) + biases

    mixed_7c = end_points["Mixed_7c"]
    return {
        "logits": logits,
        "aux_logits": end_points["AuxLogits"],
        "global_pool_logits": classify(mixed_7c),
        "top_left_logits": classify(mixed_7c[:, :8, :8]),
    }


def image_fields(size: int, count: int = 3, seed: int = 0) -> np.ndarray:
    """Deterministic images in [-1, 1]: 4x4 random colour fields upsampled, plus fine noise."""
    rng = np.random.default_rng([seed, size])
    coarse = rng.uniform(-1.0, 1.0, (count, 4, 4, 3)).astype(np.float32)
    images = tf.image.resize(coarse, (size, size), method="bicubic").numpy()
    images += rng.normal(0.0, 0.1, images.shape).astype(np.float32)
    return np.clip(images, -1.0, 1.0)


def generated_values(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """deterministic_values with batch-norm means scaled by MEAN_SCALE."""
    return {
        name: value * np.float32(MEAN_SCALE) if name.endswith("/moving_mean") else value
        for name, value in deterministic_values(shapes).items()
    }


def keras_outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in model(images).items()}


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference; NaN or inf anywhere counts as infinite."""
    return float(np.nan_to_num(np.abs(got - want), nan=np.inf).max())


@pytest.fixture(scope="module")
def manifest() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the variables tf_slim's graph creates at 299 pixels."""
    return variable_shapes(slim_graph, 299)


@pytest.fixture(scope="module")
def values(manifest: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    return generated_values(manifest)


@pytest.fixture(scope="module")
def checkpoint(values: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("inception_v3_checkpoint")
    return write_checkpoint(folder / "inception_v3.ckpt", values)


@pytest.fixture(scope="module")
def models(checkpoint: str) -> dict[bool, keras.Model]:
    """The Keras model with each head (keyed by global_pool), loaded from the checkpoint."""
    loaded = {}
    for global_pool in (False, True):
        model = inception_v3.build(global_pool=global_pool)
        assign_from_checkpoint(slim_variables(model), checkpoint)
        loaded[global_pool] = model
    return loaded


@pytest.fixture(scope="module")
def scratch_model() -> keras.Model:
    """A model for tests that load other checkpoints into it."""
    return inception_v3.build()


@pytest.fixture(scope="module")
def images() -> dict[int, np.ndarray]:
    return {size: image_fields(size) for size in SIZES}


@pytest.fixture(scope="module")
def reference(checkpoint: str, images: dict[int, np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
    """tf_slim's outputs on the generated checkpoint, per input size."""
    return {size: run(slim_graph, checkpoint, images[size]) for size in SIZES}


def test_variable_count():
    variables = slim_variables(inception_v3.build())
    assert len(variables) == 388
    assert sum(int(np.prod(v.shape)) for v in variables.values()) == 27_182_194


@pytest.mark.parametrize("size", [298, 347])
def test_sizes_without_a_5x5_aux_map_are_refused(size: int):
    with pytest.raises(ValueError, match=r"299\.\.346"):
        inception_v3.build(input_size=size)


@pytest.mark.slow
@pytest.mark.parametrize("size", [299, 346])
def test_variable_manifest_matches_tf_slim(size: int, manifest: dict[str, tuple[int, ...]]):
    shapes = manifest if size == 299 else variable_shapes(slim_graph, size)
    model = inception_v3.build(input_size=size)
    assert {name: tuple(v.shape) for name, v in slim_variables(model).items()} == shapes


@pytest.mark.slow
def test_tf_slim_leaves_the_checkpoint_layout_outside_299_to_346():
    """Where `build` refuses, slim renames the aux conv (smaller) or cannot squeeze (larger)."""
    assert f"{S}/AuxLogits/Conv2d_2a_4x4/weights" in variable_shapes(slim_graph, 298)
    with pytest.raises(ValueError, match=r"[Ss]queeze"):
        variable_shapes(slim_graph, 347)


@pytest.mark.slow
@pytest.mark.parametrize("size", [298, 347])
def test_unsized_model_fails_loudly_outside_299_to_346(size: int, scratch_model: keras.Model):
    with pytest.raises(ValueError):
        scratch_model(np.zeros((1, size, size, 3), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("global_pool", [False, True], ids=["slim_8x8", "global_pool"])
@pytest.mark.parametrize("size", SIZES)
def test_keras_model_matches_tf_slim(
    size: int,
    global_pool: bool,
    models: dict[bool, keras.Model],
    images: dict[int, np.ndarray],
    reference: dict[int, dict[str, np.ndarray]],
):
    want = reference[size]
    want_logits = want["global_pool_logits" if global_pool else "logits"]
    got = keras_outputs(models[global_pool], images[size])
    assert max_abs_diff(got["logits"], want_logits) <= TOL
    assert max_abs_diff(got["aux_logits"], want["aux_logits"]) <= TOL
    # The generated weights must make the comparison meaningful: labels depend on the image.
    assert len(set(want_logits.argmax(axis=1))) > 1
    assert len(set(want["aux_logits"].argmax(axis=1))) > 1


@pytest.mark.slow
def test_default_head_averages_the_top_left_8x8_cells(
    models: dict[bool, keras.Model],
    images: dict[int, np.ndarray],
    reference: dict[int, dict[str, np.ndarray]],
):
    """At 331 the 9x9 Mixed_7c map meets slim's 8x8 stride-2 pool: one window, top left."""
    slim_299, slim_331 = reference[299], reference[331]
    # At 299 the map is 8x8: the slim head is a global average.
    assert max_abs_diff(slim_299["logits"], slim_299["global_pool_logits"]) <= TOL
    # At 331 slim's logits are those of the top-left 8x8 mean, not of the whole map...
    assert max_abs_diff(slim_331["logits"], slim_331["top_left_logits"]) <= TOL
    assert max_abs_diff(slim_331["logits"], slim_331["global_pool_logits"]) > 100 * TOL
    # ...and the two Keras heads reproduce that difference.
    default = keras_outputs(models[False], images[331])["logits"]
    global_pool = keras_outputs(models[True], images[331])["logits"]
    assert max_abs_diff(default, slim_331["top_left_logits"]) <= TOL
    assert max_abs_diff(default, global_pool) > 100 * TOL


SWAPS = {
    "branch_weights": (
        f"{S}/Mixed_6b/Branch_1/Conv2d_0a_1x1/weights",
        f"{S}/Mixed_6b/Branch_2/Conv2d_0a_1x1/weights",
    ),
    "mean_variance": (
        f"{S}/Mixed_5b/Branch_1/Conv2d_0b_5x5/BatchNorm/moving_mean",
        f"{S}/Mixed_5b/Branch_1/Conv2d_0b_5x5/BatchNorm/moving_variance",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), SWAPS.values(), ids=list(SWAPS))
def test_swapped_tensors_break_agreement(
    first: str,
    second: str,
    values: dict[str, np.ndarray],
    scratch_model: keras.Model,
    images: dict[int, np.ndarray],
    reference: dict[int, dict[str, np.ndarray]],
    tmp_path: Path,
):
    """A loader that mixed up same-shaped tensors would fail the tf_slim comparison."""
    assert values[first].shape == values[second].shape
    swapped = {**values, first: values[second], second: values[first]}
    assign_from_checkpoint(
        slim_variables(scratch_model), write_checkpoint(tmp_path / "swapped.ckpt", swapped)
    )
    got = keras_outputs(scratch_model, images[299])
    want = reference[299]
    assert max_abs_diff(got["logits"], want["logits"]) > 100 * TOL
    assert max_abs_diff(got["aux_logits"], want["aux_logits"]) > 100 * TOL


MISSING = f"{S}/Logits/Conv2d_1c_1x1/biases"
# The name Mixed_7b uses for its 3x1 conv; Mixed_7c's is Conv2d_0c_3x1.
UNEXPECTED = f"{S}/Mixed_7c/Branch_1/Conv2d_0b_3x1/weights"
MIS_SHAPED = f"{S}/Mixed_6b/Branch_1/Conv2d_0b_1x7/weights"
UNFIT = unfit_edits(MISSING, UNEXPECTED, (3, 1, 384, 384), MIS_SHAPED, (7, 1, 128, 128))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "edit"), UNFIT.values(), ids=list(UNFIT))
def test_unfit_checkpoint_is_refused_by_name(
    name: str,
    edit: Edit,
    values: dict[str, np.ndarray],
    scratch_model: keras.Model,
    tmp_path: Path,
):
    prefix = write_checkpoint(tmp_path / "unfit.ckpt", edit(values))
    with pytest.raises(CheckpointError) as caught:
        assign_from_checkpoint(slim_variables(scratch_model), prefix)
    assert name in str(caught.value)
