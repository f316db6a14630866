"""ParameterError: library messages name Python parameters, a CLI says them as its flags."""

from defense.common import cli
from defense.common.errors import ParameterError


def test_only_the_named_parameters_are_respelled_as_whole_words():
    error = ParameterError(
        "epsilon 20 exceeds max_epsilon; step_size must be in (0, epsilon=4]",
        "epsilon",
        "max_epsilon",
    )
    assert str(error) == error.message
    assert cli.in_flags(error) == (
        "--epsilon 20 exceeds --max_epsilon; step_size must be in (0, --epsilon=4]"
    )


def test_a_cli_may_spell_a_parameter_as_another_flag():
    error = ParameterError("labels has no label for a.png", "labels")
    assert cli.in_flags(error, {"labels": "labels_file"}) == "--labels_file has no label for a.png"


def test_other_errors_are_shown_as_they_are():
    assert cli.in_flags(ValueError("unknown model 'vgg'")) == "unknown model 'vgg'"
    assert cli.in_flags("plain text") == "plain text"
    assert ParameterError("no parameters named").spelled(str.upper) == "no parameters named"


def test_a_parameter_inside_a_path_is_left_alone():
    error = ParameterError(
        "/data/output_dir/run holds another run; use another output_dir", "output_dir"
    )
    assert cli.in_flags(error) == "/data/output_dir/run holds another run; use another --output_dir"
