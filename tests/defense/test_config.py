"""Shipped configs carry the paper's and the challenge's settings; bad configs are refused."""

import json

import pytest

from defense.config import DefenseConfig, available_configs, load_config


def test_shipped_configs():
    assert available_configs() == ["challenge", "none", "paper"]
    challenge = load_config("challenge")
    assert (challenge.low, challenge.high, challenge.out_size) == (310, 331, 331)
    assert (challenge.num_iterations, challenge.flip_probability, challenge.aux_weight) == (
        30,
        0.5,
        0.4,
    )
    assert challenge.method == "nearest" and not challenge.per_image
    paper = load_config("paper")
    assert (paper.low, paper.high, paper.num_iterations, paper.flip_probability) == (
        299,
        331,
        1,
        0.0,
    )
    none = load_config("none")
    assert not none.randomize and none.num_iterations == 1 and none.flip_probability == 0


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
        ({"low": "310"}, "low must be an integer, got '310'"),
        ({"num_iterations": 1.5}, "num_iterations must be an integer"),
        ({"flip_probability": "0.5"}, "flip_probability must be a number"),
        ({"flip_probability": 1.5}, r"flip_probability must be in \[0, 1\]"),
        ({"flip": True}, "unknown keys"),
        ({"per_image": 1}, "per_image must be true or false"),
        ({"randomize": "false"}, "randomize must be true or false"),
        ({"aux_weight": "0.4"}, "aux_weight must be a number"),
        ({"aux_weight": float("nan")}, "aux_weight must be finite"),
        ({"aux_weight": float("inf")}, "aux_weight must be finite"),
        ({"method": 3}, "method must be a string"),
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


@pytest.mark.parametrize("text", ["[1, 2]", '"challenge"', "3", "null"])
def test_a_config_that_is_not_an_object_is_refused(tmp_path, text):
    path = tmp_path / "odd.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_config(str(path))


def test_the_model_input_size_is_the_canvas_or_the_image():
    assert load_config("challenge").model_input_size(299) == 331
    assert load_config("none").model_input_size(299) == 299


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("inception_v3", 400), ("inception_resnet_v2", 60)])
def test_a_canvas_the_model_cannot_take_is_refused_when_building(name, size):
    from defense import models

    with pytest.raises(ValueError, match=f"{name} cannot take {size}x{size} inputs"):
        models.build(name, input_size=size)


def test_num_iterations_has_a_documented_maximum(tmp_path):
    """Patterns per image are bounded (10000): a typo such as 2000000000 is refused at
    once, naming the parameter, instead of allocating gigabytes of patterns."""
    from defense.common.errors import ParameterError

    assert DefenseConfig(name="x", num_iterations=10_000).num_iterations == 10_000
    with pytest.raises(ParameterError, match=r"^num_iterations must be <= 10000, got 2000000000"):
        DefenseConfig(name="x").replace(num_iterations=2_000_000_000)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"num_iterations": 10_001}))
    with pytest.raises(ValueError, match=r"huge\.json: num_iterations must be <= 10000, got 10001"):
        load_config(str(path))
