"""A run's settings (attacks.evaluation.settings): hyper-parameters, budgets, scenarios.

Library errors name the Python parameters (`max_epsilon`); the commands show them
as their flags (`--max_epsilon`, `defense.cli.in_flags`).
"""

import pytest

from attacks.evaluation.settings import attack_params, labels_digest, make_settings
from defense.common import cli
from defense.common.errors import ParameterError


def test_attack_defaults_and_budget():
    assert attack_params("fgsm", {}) == {"epsilon": 2.0}
    assert attack_params("fgsm", {}, max_epsilon=8) == {"epsilon": 8}
    pgd = attack_params("pgd", {})
    assert pgd["epsilon"] == 16 and pgd["steps"] == 10
    # The step size defaults to epsilon / 8, recorded as the step it stands for.
    assert pgd["step_size"] == 2.0
    assert attack_params("pgd", {"step_size": 2.0}) == pgd
    eot = attack_params("eot_pgd", {}, max_epsilon=4)
    assert eot["epsilon"] == 4 and eot["step_size"] == 0.5
    assert attack_params("eot_pgd", {"step_size": 1.0})["samples"] == 30
    assert attack_params("deepfool", {}) == {"nb_candidate": 10, "overshoot": 0.02, "max_iter": 50}
    assert attack_params("deepfool", {}, max_epsilon=4) == attack_params("deepfool", {})
    assert attack_params("cw", {"confidence": 5.0})["confidence"] == 5.0


@pytest.mark.parametrize(
    ("attack", "given", "message"),
    [
        ("fgsm", {"epsilon": 300}, r"^epsilon must be in \(0, 255\]"),
        ("fgsm", {"epsilon": 0}, r"^epsilon must be in \(0, 255\]"),
        ("pgd", {"epsilon": 4, "step_size": 5}, r"^step_size must be in \(0, epsilon=4\], got 5"),
        ("pgd", {"steps": 0}, "^steps must be"),
        ("eot_pgd", {"samples": 0}, "^samples must be"),
        (
            "deepfool",
            {"epsilon": 4},
            r"^epsilon does not apply to deepfool, which is a minimal-perturbation attack "
            r"\(bound it with max_epsilon\)",
        ),
        ("deepfool", {"overshoot": -1}, "^overshoot must be"),
        ("cw", {"binary_search_steps": 0}, "^binary_search_steps must be"),
        ("deepfool", {"overshoot": float("nan")}, "overshoot must be a finite number"),
        ("cw", {"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ("cw", {"confidence": float("inf")}, "confidence must be a finite number"),
        ("cw", {"initial_const": float("nan")}, "initial_const must be a finite number"),
        ("pgd", {"epsilon": float("nan")}, r"^epsilon must be in \(0, 255\]"),
        ("pgd", {"step_size": float("nan")}, r"^step_size must be in \(0, epsilon=16"),
        ("fgsm", {"epsilon": float("nan")}, r"^epsilon must be in \(0, 255\]"),
        ("fgsm", {"steps": 3}, "^steps does not apply to fgsm; fgsm takes epsilon$"),
        ("bim", {}, "unknown attack 'bim'"),
    ],
)
def test_bad_hyper_parameters(attack, given, message):
    with pytest.raises(ParameterError, match=message):
        attack_params(attack, given)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attack": "fgsm", "scenario": "nope"}, "unknown scenario 'nope'"),
        ({"attack": "fgsm", "model": "vgg16"}, "unknown model 'vgg16'"),
        ({"attack": "eot_pgd", "scenario": "single_pattern"}, "does not apply"),
        ({"attack": "eot_pgd", "config": "nope"}, "unknown config"),
        (
            {"attack": "pgd", "config": "paper"},
            "^config applies to attacks on the randomized defense only",
        ),
        ({"attack": "deepfool", "targeted": True}, "untargeted"),
        ({"attack": "fgsm", "max_epsilon": 0}, r"^max_epsilon must be in \(0, 255\]"),
        ({"attack": "fgsm", "max_epsilon": 256}, r"^max_epsilon must be in \(0, 255\]"),
    ],
)
def test_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        make_settings(options.pop("attack"), **options)


@pytest.mark.parametrize(
    ("attack", "options", "message"),
    [
        ("fgsm", {"given": {"steps": 3}}, "--steps does not apply to fgsm; fgsm takes --epsilon"),
        (
            "deepfool",
            {"given": {"epsilon": 4}},
            "--epsilon does not apply to deepfool, which is a minimal-perturbation attack "
            "(bound it with --max_epsilon); deepfool takes --nb_candidate, --overshoot, "
            "--max_iter",
        ),
        ("fgsm", {"max_epsilon": 0}, "--max_epsilon must be in (0, 255] pixel units, got 0"),
        (
            "eot_pgd",
            {"scenario": "single_pattern"},
            "eot_pgd attacks the randomized defense given by --config; "
            "--scenario=single_pattern does not apply",
        ),
    ],
)
def test_the_commands_say_the_parameters_as_flags(attack, options, message):
    with pytest.raises(ParameterError) as caught:
        make_settings(attack, **options)
    assert cli.in_flags(caught.value) == message
    assert "--" not in str(caught.value)


def test_image_size_follows_the_scenario():
    assert make_settings("fgsm").image_size == 299
    assert make_settings("eot_pgd").config == "paper"
    assert make_settings("eot_pgd").image_size == 299
    assert make_settings("fgsm", scenario="one_pixel_padding").image_size == 330
    assert make_settings("pgd", scenario="ensemble_pattern").entry.name == "pgd"


def test_labels_digest_names_the_pairs_whatever_their_order():
    assert labels_digest(None) is None
    digest = labels_digest({"a.png": 1, "b.png": 2})
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert labels_digest({"b.png": 2, "a.png": 1}) == digest
    assert labels_digest({"a.png": 1, "b.png": 3}) != digest
    assert labels_digest({"a.png": 2, "b.png": 1}) != digest
    assert labels_digest({}) != labels_digest(None)
    assert labels_digest({"caf\udce9.png": 1}).startswith("sha256:")  # undecodable file name
