"""Shipped configs carry the paper's and the challenge's settings; bad configs are refused."""

import json

import pytest

from defense.config import DefenseConfig, available_configs, load_config


def test_shipped_configs():
    assert available_configs() == ["challenge", "none", "paper"]
    challenge = load_config("challenge")
    assert (challenge.low, challenge.high, challenge.out_size) == (310, 331, 331)
    assert (challenge.num_iterations, challenge.flip, challenge.aux_weight) == (30, True, 0.4)
    assert challenge.method == "nearest" and not challenge.per_image
    paper = load_config("paper")
    assert (paper.low, paper.high, paper.num_iterations, paper.flip) == (299, 331, 1, False)
    none = load_config("none")
    assert not none.randomize and none.num_iterations == 1 and not none.flip


def test_config_from_a_json_path(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"low": 300, "high": 320, "num_iterations": 5}))
    config = load_config(str(path))
    assert config.name == "mine" and (config.low, config.high, config.num_iterations) == (
        300,
        320,
        5,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"low": 320, "high": 320}, "resize range"),
        ({"low": 300, "high": 340}, "resize range"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"method": "bicubic"}, "method"),
        ({"aux_weight": -1}, "aux_weight"),
        ({"resize_low": 3}, "unknown keys"),
    ],
)
def test_bad_configs_are_refused(tmp_path, fields, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(fields))
    with pytest.raises((ValueError, TypeError), match=message):
        load_config(str(path))


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="challenge, none, paper"):
        load_config("chalenge")


def test_replace_validates():
    with pytest.raises(ValueError):
        DefenseConfig(name="x").replace(num_iterations=-1)
