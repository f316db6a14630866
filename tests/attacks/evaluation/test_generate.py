"""The directory driver (attacks.evaluation.generate): budget, resuming, failures.

Most tests use a stand-in attacker (no network); one runs every attack of the
catalog through the loop on a tiny model.
"""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from attacks.evaluation.adversarial_set import RunRecord
from attacks.evaluation.generate import (
    Attacker,
    GenerateResult,
    check_image_sizes,
    check_run_options,
    distances,
    generate_directory,
    prepare_output_dir,
    to_outputs,
)
from attacks.evaluation.settings import make_settings
from defense.common.errors import InputError, ParameterError
from defense.common.images import to_model_input
from tests.support.adversarial_helpers import (
    NAMES,
    StandIn,
    assert_within,
    make_inputs,
    read_png,
    read_stats,
    smooth_image,
)
from tests.support.tiny_models import tiny_classifier

# ---------------------------------------------------------------- outputs and checks


def test_outputs_stay_in_the_ball_after_rounding():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    adversarial = rng.uniform(-1.5, 1.5, original.shape).astype(np.float32)
    for budget in (4, 4.5, 0.7):
        pixels, rounded = to_outputs(original, adversarial, budget)
        assert pixels.dtype == np.float32 and rounded.dtype == np.uint8
        assert np.abs(pixels - original).max() <= budget + 1e-4
        assert np.abs(rounded.astype(int) - original).max() <= int(budget)
        assert pixels.min() >= 0 and pixels.max() <= 255
    pixels, rounded = to_outputs(original, adversarial, None)
    np.testing.assert_array_equal(rounded, np.rint(np.clip((adversarial + 1) * 127.5, 0, 255)))


def test_distances_are_per_image_in_pixel_units():
    original = np.zeros((2, 2, 2, 3), np.uint8)
    moved = original.astype(np.float32)
    moved[0, 0, 0, 0], moved[0, 1, 1, 2] = 3, -4
    moved[1] = 0.5
    l2, linf = distances(original, moved)
    np.testing.assert_allclose(l2, [5, np.sqrt(12 * 0.25)])
    np.testing.assert_allclose(linf, [4, 0.5])


def test_sizes_other_than_the_attack_size_are_refused(tmp_path):
    folder = make_inputs(tmp_path / "in", count=2)
    Image.fromarray(smooth_image(5, 300)).save(folder / "big.png")
    (folder / "broken.png").write_bytes(b"not a png")
    paths = sorted(folder.iterdir())
    with pytest.raises(InputError, match=r"1 image\(s\) are not 299x299.*big\.png \(300x300\)"):
        check_image_sizes(paths, 299)
    check_image_sizes([folder / "img_0.png", folder / "broken.png"], 299)


def test_output_dir_checks(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=1)
    assert prepare_output_dir(tmp_path / "a" / "b", inputs).is_dir()
    with pytest.raises(InputError, match="is the input directory"):
        prepare_output_dir(tmp_path / "in" / ".." / "in", inputs)
    with pytest.raises(InputError, match="not a directory"):
        prepare_output_dir(inputs / "img_0.png", inputs)
    with pytest.raises(InputError, match="cannot be written"):
        prepare_output_dir(inputs / "img_0.png" / "out", inputs)


@pytest.mark.parametrize(
    ("attack", "options", "message"),
    [
        (
            "fgsm",
            {"num_iterations": 3},
            r"^num_iterations applies to attacks on the randomized defense \(eot_pgd, apgd\) only",
        ),
        ("pgd", {"chunk_size": 2}, r"^chunk_size applies to .* \(eot_pgd, apgd\) only"),
        ("eot_pgd", {"num_iterations": 0}, "^num_iterations must be >= 1, got 0"),
        ("eot_pgd", {"chunk_size": 0}, "^chunk_size must be >= 1, got 0"),
    ],
)
def test_options_of_attacks_on_the_defense(attack, options, message):
    settings = make_settings(attack)
    with pytest.raises(ParameterError, match=message):
        check_run_options(settings, **{"num_iterations": None, "chunk_size": None, **options})
    check_run_options(make_settings("eot_pgd"), num_iterations=2, chunk_size=1)
    check_run_options(settings, num_iterations=None, chunk_size=None)


# ---------------------------------------------------------------- generation with a stand-in


def test_interrupted_generation_keeps_finished_batches_and_resumes(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    output = tmp_path / "out"
    settings = make_settings("fgsm", max_epsilon=3.5)
    paths = sorted(inputs.iterdir())
    record = RunRecord(prepare_output_dir(output, inputs), settings)
    with pytest.raises(KeyboardInterrupt):
        generate_directory(
            paths, record, StandIn(settings, 2), batch_size=2, save_float=True, progress=False
        )
    assert sorted(read_stats(output)) == ["img_0.png", "img_1.png"]
    assert sorted(p.name for p in output.glob("*.png")) == ["img_0.png", "img_1.png"]
    assert not list(output.glob(".*"))

    record = RunRecord(output, settings)
    result = generate_directory(
        paths, record, StandIn(settings), batch_size=2, save_float=True, progress=False
    )
    assert result == GenerateResult(generated=["img_2.png"], skipped=["img_0.png", "img_1.png"])
    rows = read_stats(output)
    assert sorted(rows) == NAMES
    assert_within(inputs, output, 3)
    for name in NAMES:
        original = read_png(inputs / name)
        floats = np.load(output / "float" / f"{name}.npy")
        assert floats.dtype == np.float32 and np.abs(floats - original).max() <= 3.5 + 1e-4
        row = rows[name]
        assert float(row["linf_png"]) <= 3 and float(row["linf_float"]) <= 3.5 + 1e-3
        clean = StandIn(settings).predict(to_model_input(original[None]))[0]
        assert int(row["label"]) == int(row["clean_prediction"]) == clean
        assert row["target"] == ""
        assert row["success_png"] == str(int(row["prediction_png"] != row["label"]))


def test_missing_npy_or_row_means_not_done(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    settings = make_settings("fgsm", max_epsilon=2)
    paths = sorted(inputs.iterdir())
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    generate_directory(paths, record, StandIn(settings), save_float=False, progress=False)
    result = generate_directory(paths, record, StandIn(settings), save_float=True, progress=False)
    assert result.generated == NAMES


def test_targeted_stats(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=2)
    settings = make_settings("pgd", {"steps": 1}, targeted=True, max_epsilon=4)
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    record.write_settings({"note": "test"})
    paths = sorted(inputs.iterdir())
    with pytest.raises(ParameterError, match="a targeted attack needs targets"):
        generate_directory(paths, record, StandIn(settings), progress=False)
    targets = {"img_0.png": 2, "img_1.png": 7}
    generate_directory(
        paths,
        record,
        StandIn(settings),
        labels={"img_0.png": 5, "img_1.png": 6},
        targets=targets,
        progress=False,
    )
    rows = read_stats(tmp_path / "out")
    assert [(rows[n]["label"], rows[n]["target"]) for n in sorted(rows)] == [("5", "2"), ("6", "7")]
    for row in rows.values():
        assert row["success_float"] == str(int(row["prediction_float"] == row["target"]))


def test_batch_size_must_be_positive(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=1)
    settings = make_settings("fgsm")
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    with pytest.raises(ParameterError, match=r"^batch_size must be >= 1, got 0"):
        generate_directory(
            sorted(inputs.iterdir()), record, StandIn(settings), batch_size=0, progress=False
        )
    assert not (tmp_path / "out" / "stats.csv").exists()


def test_an_unreadable_image_is_reported_and_the_rest_attacked(tmp_path, capsys):
    from defense.common import cli

    inputs = make_inputs(tmp_path / "in")
    (inputs / "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    settings = make_settings("fgsm", max_epsilon=4)
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    result = generate_directory(sorted(inputs.iterdir()), record, StandIn(settings), progress=False)
    assert result.generated == ["img_0.png", "img_2.png"]
    assert list(result.failures) == ["img_1.png"]
    assert sorted(read_stats(tmp_path / "out")) == ["img_0.png", "img_2.png"]
    assert cli.report_failures("generate_adversarial", result.failures, "attacked") == 1
    assert "1 image(s) could not be attacked:\n  img_1.png: " in capsys.readouterr().err
    assert cli.report_failures("generate_adversarial", {}, "attacked") == 0


def test_odd_file_names_keep_one_stats_row_each_across_resumes(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=1)
    odd = ["a\rb.png", "c\nd.png", os.fsdecode(b"caf\xe9.png")]
    for name in odd:
        shutil.copy(inputs / "img_0.png", inputs / name)
    settings = make_settings("fgsm", max_epsilon=4)
    output = prepare_output_dir(tmp_path / "out", inputs)
    paths = sorted(inputs.iterdir())
    generate_directory(paths, RunRecord(output, settings), StandIn(settings), progress=False)
    for _ in range(2):  # resumes: nothing left to do, and no row grows
        record = RunRecord(output, settings)
        assert sorted(record.rows) == sorted(["img_0.png", *odd])
        result = generate_directory(paths, record, StandIn(settings), progress=False)
        assert result.generated == [] and len(result.skipped) == 4


# ---------------------------------------------------------------- every attack, on a tiny model


@pytest.fixture(scope="module")
def tiny_model():
    """A small 1001-class Keras net taking any image size, with the registry's output dict."""
    return tiny_classifier(1001, kernel=16, strides=16, aux=False, logits_stddev=3)


QUICK = {
    "fgsm": {},
    "pgd": {"steps": 2},
    "eot_pgd": {"steps": 1, "samples": 2},
    "deepfool": {"max_iter": 3},
    "cw": {"max_iterations": 3, "binary_search_steps": 1, "learning_rate": 0.1},
}


@pytest.mark.parametrize(
    ("attack", "scenario"),
    [
        *((attack, "vanilla") for attack in sorted(QUICK)),
        ("pgd", "ensemble_pattern"),
        ("fgsm", "one_pixel_padding"),
    ],
)
def test_every_attack_runs_through_the_directory_loop(tiny_model, tmp_path, attack, scenario):
    settings = make_settings(attack, QUICK[attack], scenario=scenario, max_epsilon=6)
    inputs = make_inputs(tmp_path / "in", count=2, size=settings.image_size)
    on_defense = attack == "eot_pgd"
    attacker = Attacker(
        settings,
        tiny_model,
        seed=0,
        num_iterations=2 if on_defense else None,
        chunk_size=1 if on_defense else None,
    )
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    result = generate_directory(
        sorted(inputs.iterdir()), record, attacker, save_float=True, progress=False
    )
    assert result.generated == NAMES[:2] and not result.failures
    assert_within(inputs, tmp_path / "out", 6, names=NAMES[:2])
    rows = read_stats(tmp_path / "out")
    assert all(float(row["linf_float"]) <= 6 + 1e-3 for row in rows.values())
    if attack in ("fgsm", "pgd", "eot_pgd"):
        assert all(float(row["linf_png"]) > 0 for row in rows.values())
