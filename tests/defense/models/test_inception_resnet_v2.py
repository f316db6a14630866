"""The Keras Inception-ResNet-v2 and its checkpoint loader against an independent reference.

`slim_reference` is a plain-TensorFlow forward pass written from the slim scope
structure, sharing no code with `defense`. Both read the same generated slim
checkpoint; the Keras model must reproduce the reference's logits and aux
logits, a checkpoint with exchanged same-shaped tensors must visibly break that
agreement, and a checkpoint that does not fit must be refused with its names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import defense.models
from defense.models import CheckpointError, expected_shapes, get_spec, load
from tests.support.slim_reference.checkpoint_writer import (
    Edit,
    checkpoint_getter,
    unfit_edits,
    values_getter,
    write_checkpoint,
)
from tests.support.slim_reference.inception_resnet_v2 import Getter, forward, variable_shapes

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

MODEL = "ens_adv_inception_resnet_v2"
AUX_HEADS = ("entry", "tf_models")
S = "InceptionResnetV2"

# Largest allowed |Keras - reference| on any logit or aux logit. Measured on these
# images and weights (|logits| <= 5.3, |aux logits| <= 2.1), both heads, 299 and 331:
# at most 1.0e-5 on logits (2.0e-6 relative to the largest logit) and 2.7e-6 on aux
# logits (1.3e-6 relative), and 1.8e-5 on the swapped checkpoints below; that is
# float32 re-association noise. Exchanging one pair of same-shaped tensors
# (test_swapped_tensors_break_agreement) moves the outputs by 0.32 to 2.8. 1e-3 is
# ~50x above the noise and ~300x below the smallest mistake measured.
TOL = 1e-3


def smooth_images(size: int, count: int = 3, seed: int = 0) -> np.ndarray:
    """Deterministic images in [-1, 1]: coarse random colour blobs plus fine noise.

    Smooth structure, unlike i.i.d. pixel noise, gives the generated weights
    clearly image-dependent labels.
    """
    rng = np.random.default_rng([seed, size])
    coarse = rng.uniform(-1.0, 1.0, (count, 8, 8, 3)).astype(np.float32)
    images = tf.image.resize(coarse, (size, size), method="bicubic").numpy()
    images += rng.normal(0.0, 0.1, images.shape).astype(np.float32)
    return np.clip(images, -1.0, 1.0)


def run_model(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in model(images).items()}


def run_reference(
    images: np.ndarray, get: Getter, aux_head: str = "entry"
) -> dict[str, np.ndarray]:
    outputs = forward(images, get, aux_head=aux_head)
    return {key: value.numpy() for key, value in outputs.items()}


def max_abs_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per output; NaN or inf anywhere counts as infinite."""
    return {
        key: float(np.nan_to_num(np.abs(got[key] - want[key]), nan=np.inf).max())
        for key in ("logits", "aux_logits")
    }


def copy_checkpoint(prefix: str, folder: Path, edit_data: Callable[[bytes], bytes]) -> str:
    """Copy a checkpoint into `folder` with its data file passed through `edit_data`."""
    source = Path(prefix)
    target = folder / source.name
    Path(f"{target}.index").write_bytes(Path(f"{source}.index").read_bytes())
    data_name = f"{source.name}.data-00000-of-00001"
    (folder / data_name).write_bytes(edit_data((source.parent / data_name).read_bytes()))
    return str(target)


@pytest.fixture(scope="module")
def models(irv2_checkpoint: str) -> dict[str, keras.Model]:
    """The Keras model with each aux head, loaded from the generated checkpoint."""
    return {head: load(MODEL, irv2_checkpoint, aux_head=head) for head in AUX_HEADS}


@pytest.fixture(scope="module")
def built() -> keras.Model:
    """One model of the entry's architecture, for the tests that load other checkpoints."""
    return defense.models.build(MODEL)


@pytest.fixture
def load_built(built: keras.Model, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], keras.Model]:
    """`load(MODEL, prefix)` with its build handing back `built`: loading assigns every
    variable strictly, whatever the model held before, so one build serves every load."""
    monkeypatch.setattr(defense.models, "build", lambda name, **options: built)
    return lambda prefix: load(MODEL, prefix)


@pytest.fixture(scope="module")
def images_299() -> np.ndarray:
    return smooth_images(299)


@pytest.fixture(scope="module")
def reference(irv2_values: dict[str, np.ndarray]) -> Callable[[int, str], dict[str, np.ndarray]]:
    """Reference outputs on `smooth_images(size)` with the generated weights, by size and
    aux head, each computed once."""
    get = values_getter(irv2_values)
    return functools.cache(lambda size, aux_head: run_reference(smooth_images(size), get, aux_head))


@pytest.fixture(scope="module")
def reference_299(
    reference: Callable[[int, str], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Reference outputs (entry aux head) on the original generated weights."""
    return reference(299, "entry")


@pytest.mark.slow
def test_generated_checkpoint_round_trips(irv2_checkpoint: str, irv2_values: dict[str, np.ndarray]):
    """The shared fixture's files hold exactly the generated values under their slim names."""
    stored = tf.train.load_checkpoint(irv2_checkpoint).get_variable_to_shape_map()
    assert set(stored) == set(irv2_values)
    get = checkpoint_getter(irv2_checkpoint)
    for name, value in irv2_values.items():
        np.testing.assert_array_equal(get(name, value.shape), value, err_msg=name)


@pytest.mark.parametrize("aux_head", AUX_HEADS)
def test_variable_manifest_matches_reference(aux_head: str):
    shapes = variable_shapes(aux_head)
    assert len(shapes) == 908
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == 59_244_594
    assert expected_shapes(MODEL, aux_head=aux_head) == shapes
    spec = get_spec(MODEL)
    assert (spec.num_variables, spec.num_parameters) == (908, 59_244_594)


@pytest.mark.slow
@pytest.mark.parametrize("size", [299, 331])
@pytest.mark.parametrize("aux_head", AUX_HEADS)
def test_keras_model_matches_reference(
    aux_head: str,
    size: int,
    models: dict[str, keras.Model],
    reference: Callable[[int, str], dict[str, np.ndarray]],
):
    want = reference(size, aux_head)
    got = run_model(models[aux_head], smooth_images(size))
    assert max(max_abs_diff(got, want).values()) <= TOL
    # The generated weights must make the comparison meaningful: labels depend on the image.
    assert len(set(want["logits"].argmax(axis=1))) > 1
    assert len(set(want["aux_logits"].argmax(axis=1))) > 1


@pytest.mark.slow
def test_aux_heads_differ(reference: Callable[[int, str], dict[str, np.ndarray]]):
    """The two aux heads are really different computations on the same variables."""
    entry, tf_models = reference(299, "entry"), reference(299, "tf_models")
    diff = max_abs_diff(entry, tf_models)
    assert diff["logits"] == 0.0
    assert diff["aux_logits"] > 100 * TOL


SWAPS = {
    "branch_weights": (
        f"{S}/Repeat/block35_1/Branch_1/Conv2d_0a_1x1/weights",
        f"{S}/Repeat/block35_1/Branch_2/Conv2d_0a_1x1/weights",
    ),
    "mean_variance": (
        f"{S}/Mixed_5b/Branch_1/Conv2d_0b_5x5/BatchNorm/moving_mean",
        f"{S}/Mixed_5b/Branch_1/Conv2d_0b_5x5/BatchNorm/moving_variance",
    ),
    "beta_mean": (
        f"{S}/Mixed_6a/Branch_1/Conv2d_0b_3x3/BatchNorm/beta",
        f"{S}/Mixed_6a/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), SWAPS.values(), ids=list(SWAPS))
def test_swapped_tensors_break_agreement(
    first: str,
    second: str,
    irv2_values: dict[str, np.ndarray],
    images_299: np.ndarray,
    reference_299: dict[str, np.ndarray],
    load_built: Callable[[str], keras.Model],
    tmp_path: Path,
):
    """A loader that mixed up same-shaped tensors would fail the reference comparison."""
    assert irv2_values[first].shape == irv2_values[second].shape
    swapped = {**irv2_values, first: irv2_values[second], second: irv2_values[first]}
    model = load_built(write_checkpoint(tmp_path / "swapped.ckpt", swapped))
    got = run_model(model, images_299)
    # Loading follows the names: the model still agrees with the reference on the same weights...
    assert max(max_abs_diff(got, run_reference(images_299, values_getter(swapped))).values()) <= TOL
    # ...and misses the reference on the original weights by far more than the tolerance.
    assert min(max_abs_diff(got, reference_299).values()) > 100 * TOL


MISSING = f"{S}/Block8/Conv2d_1x1/biases"
UNEXPECTED = f"{S}/Repeat_2/block8_10/Conv2d_1x1/biases"
MIS_SHAPED = f"{S}/Repeat_1/block17_1/Branch_1/Conv2d_0b_1x7/weights"
UNFIT = unfit_edits(MISSING, UNEXPECTED, (2080,), MIS_SHAPED, (7, 1, 128, 160))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "edit"), UNFIT.values(), ids=list(UNFIT))
def test_unfit_checkpoint_is_refused_by_name(
    name: str,
    edit: Edit,
    irv2_values: dict[str, np.ndarray],
    load_built: Callable[[str], keras.Model],
    tmp_path: Path,
):
    prefix = write_checkpoint(tmp_path / "unfit.ckpt", edit(irv2_values))
    with pytest.raises(CheckpointError) as caught:
        load_built(prefix)
    assert name in str(caught.value)


@pytest.mark.slow
def test_bookkeeping_entries_are_ignored(
    irv2_values: dict[str, np.ndarray],
    images_299: np.ndarray,
    reference_299: dict[str, np.ndarray],
    load_built: Callable[[str], keras.Model],
    tmp_path: Path,
):
    weights = f"{S}/Conv2d_1a_3x3/weights"
    # Training slots hold values that would wreck the outputs if they were loaded.
    bookkeeping = {
        "global_step": np.array(123_456, np.int64),
        f"{weights}/ExponentialMovingAverage": -3.0 * irv2_values[weights],
        f"{weights}/RMSProp": np.full_like(irv2_values[weights], 7.0),
        f"{weights}/RMSProp_1": np.full_like(irv2_values[weights], -7.0),
    }
    model = load_built(write_checkpoint(tmp_path / "trained.ckpt", {**irv2_values, **bookkeeping}))
    assert max(max_abs_diff(run_model(model, images_299), reference_299).values()) <= TOL


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _overwrite_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 64 + data[middle + 64 :]


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _overwrite_middle], ids=["truncated", "overwritten"])
def test_damaged_data_file_is_refused(
    damage: Callable[[bytes], bytes],
    irv2_checkpoint: str,
    load_built: Callable[[str], keras.Model],
    tmp_path: Path,
):
    prefix = copy_checkpoint(irv2_checkpoint, tmp_path, damage)
    with pytest.raises(CheckpointError, match=r"truncated|corrupt"):
        load_built(prefix)


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load(MODEL, path)


def test_missing_checkpoint_is_refused(tmp_path: Path):
    path = tmp_path / "nowhere.ckpt"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load(MODEL, path)
