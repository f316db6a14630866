"""`load_defended`, the one loading call of every command: a registry model from a
slim-format checkpoint under a config, the default checkpoint location, and errors
that name the parameter (or, for a missing checkpoint, say how to get one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defense.common.cli import CHECKPOINT_DIR_ENV
from defense.common.errors import ParameterError
from defense.config import load_config
from defense.loading import checkpoint_location, load_defended
from tests.support.tiny_models import TINY_DEFENSE

MODEL = "inception_resnet_v2"


def test_loads_a_slim_checkpoint_under_the_given_config(irv2_checkpoint, irv2_values):
    from defense.models.slim import slim_variables

    defended = load_defended(MODEL, irv2_checkpoint, config="paper", fixed_size=True)
    assert defended.spec.name == MODEL
    assert defended.config == load_config("paper")
    assert defended.checkpoint == irv2_checkpoint
    # fixed_size: built for the paper's 331-pixel canvas.
    assert tuple(defended.model.input_shape) == (None, 331, 331, 3)
    weights = slim_variables(defended.model)
    assert set(weights) == set(irv2_values)
    for name in sorted(irv2_values)[:: len(irv2_values) // 8]:
        np.testing.assert_array_equal(weights[name].numpy(), irv2_values[name])


def test_a_config_the_model_cannot_take_fails_before_the_weights_are_read(irv2_checkpoint):
    with pytest.raises(ValueError, match="inception_v3 cannot take 16x16 inputs"):
        load_defended("inception_v3", irv2_checkpoint, config=TINY_DEFENSE, fixed_size=True)


@pytest.mark.parametrize("given", [False, True])
def test_a_missing_checkpoint_says_how_to_get_one(given, tmp_path, monkeypatch):
    from defense.models import CheckpointError

    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    path = tmp_path / "inception_v3.ckpt"
    with pytest.raises(CheckpointError) as caught:
        load_defended("inception_v3", path if given else None)
    message = str(caught.value)
    assert f"no checkpoint at {path}" in message
    assert "download_checkpoints inception_v3" in message


def test_a_bad_config_name_names_config(irv2_checkpoint):
    with pytest.raises(ParameterError) as caught:
        load_defended(MODEL, irv2_checkpoint, config="bogus")
    assert caught.value.parameters == ("config",)
    assert "unknown config 'bogus'" in str(caught.value)
    assert caught.value.spelled(lambda name: f"--{name}").startswith("unknown --config 'bogus'")


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({"model": "vgg16"}, ("model",)),
        ({"precision": "float64"}, ("precision",)),
        ({"model": "resnet_v2_101", "aux_head": "entry"}, ("aux_head",)),
        ({"fixed_size": True, "input_size": 299}, ("fixed_size", "input_size")),
        ({"checkpoint_dir": "folder"}, ("checkpoint_path", "checkpoint_dir")),
    ],
)
def test_bad_arguments_name_their_parameters_before_any_file_is_read(arguments, names):
    arguments = {"model": MODEL, "checkpoint_path": "/nonexistent/model.ckpt", **arguments}
    with pytest.raises(ParameterError) as caught:
        load_defended(**arguments)
    assert caught.value.parameters == names


def test_checkpoint_location(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    file = "inception_v3.ckpt"
    assert checkpoint_location("inception_v3") == str(Path("checkpoints") / file)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    assert checkpoint_location("inception_v3") == str(tmp_path / file)
    assert checkpoint_location("inception_v3", checkpoint_dir="elsewhere") == f"elsewhere/{file}"
    # A given path is kept as it was spelled, so that messages quote it unchanged.
    assert checkpoint_location("inception_v3", "./weights//model.ckpt") == "./weights//model.ckpt"


def test_importing_the_module_does_not_import_tensorflow():
    code = "import sys, defense.loading; assert 'tensorflow' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
