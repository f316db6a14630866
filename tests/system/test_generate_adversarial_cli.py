"""The generate_adversarial command and the competition submissions.

Bad input is tested in process (it stops before any model is loaded); the
end-to-end tests run the command and the competition entry points (subprocesses)
on generated 299x299 PNGs with the generated Inception-ResNet-v2 checkpoint, and
check the epsilon bound on the rounded PNGs as the competition runtime would.
"""

import csv
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from attacks.evaluation.adversarial_set import STATS_COLUMNS, RunRecord
from attacks.evaluation.generate import generate_directory, prepare_output_dir
from attacks.evaluation.settings import make_settings
from tests.support.adversarial_helpers import (
    NAMES,
    SUBMISSIONS,
    StandIn,
    assert_within,
    command_module,
    make_inputs,
    read_png,
    read_stats,
    run_generate,
    run_submission,
    smooth_image,
    snapshot,
)
from tests.support.slim_reference.checkpoint_writer import write_checkpoint

# ---------------------------------------------------------------- the CLI, in process


@pytest.fixture(scope="module")
def cli():
    """Runs the command's main() in this process (bad inputs stop before any model is loaded)."""
    module = command_module("attacks.cli.generate_adversarial")

    def run(*args) -> int:
        module.FLAGS.unparse_flags()
        argv = module.FLAGS(["generate_adversarial", "--noprogress", *map(str, args)])
        return module.main(argv)

    yield run
    module.FLAGS.unparse_flags()


@pytest.fixture
def earlier_run(tmp_path):
    """Inputs, labels and an output directory holding an earlier fgsm run's files."""
    inputs = make_inputs(tmp_path / "in")
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{name},{i + 1}\n" for i, name in enumerate(NAMES)))
    output = tmp_path / "out"
    settings = make_settings("fgsm", max_epsilon=4)
    record = RunRecord(prepare_output_dir(output, inputs), settings)
    record.write_settings({})
    generate_directory(sorted(inputs.iterdir())[:1], record, StandIn(settings), progress=False)
    return inputs, labels, output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--attack=fgsm", "--labels_file={short}"], r"has no label for 1 image\(s\): img_2\.png"),
        (
            ["--attack=fgsm", "--labels_file={bad}"],
            r"label 1001 of img_1\.png is outside 1\.\.1000",
        ),
        (["--attack=fgsm", "--epsilon=300"], r"--epsilon must be in \(0, 255\]"),
        (
            ["--attack=pgd", "--epsilon=4", "--step_size=8"],
            r"--step_size must be in \(0, --epsilon=4",
        ),
        (["--attack=deepfool", "--epsilon=4"], "--epsilon does not apply to deepfool"),
        (["--attack=fgsm", "--max_epsilon=300"], r"--max_epsilon must be in \(0, 255\]"),
        (["--attack=fgsm", "--scenario=twice"], "unknown scenario 'twice'"),
        (["--attack=fgsm", "--model=vgg16"], "unknown model 'vgg16'"),
        (["--attack=bim"], "unknown attack 'bim'; known attacks: fgsm"),
        (["--attack=fgsm", "--samples=3"], "--samples does not apply to fgsm"),
        (
            ["--attack=fgsm", "--num_iterations=3"],
            r"--num_iterations applies to attacks on the randomized defense \(eot_pgd, apgd\) only",
        ),
        (["--attack=fgsm", "--batch_size=0"], "--batch_size must be >= 1"),
        (["--attack=fgsm", "--targeted"], "needs target classes.*target_class.csv"),
        (["--attack=fgsm", "--target_file={short}"], "applies to --targeted attacks only"),
        (["--attack=fgsm", "--scenario=one_pixel_padding"], "not 330x330"),
        (
            ["--attack=fgsm", "--epsilon=3", "--max_epsilon=4"],
            "holds the output of another run.*use another --output_dir",
        ),
        (["--attack=fgsm", "--labels_file={labels}"], "another run.*labels=None there, 'sha256:"),
        (
            ["--attack=fgsm", "--checkpoint_path={checkpoint}"],
            "another run.*checkpoint=None there, 'sha256:",
        ),
        (["--attack=fgsm", "--output_dir={inputs}"], "is the input directory"),
        (["--attack=fgsm", "--output_dir={inputs}/img_0.png/sub"], "cannot be written"),
        (["--attack=fgsm", "--input_dir={inputs}/absent"], "does not exist"),
    ],
)
def test_bad_input_fails_before_anything_is_written(cli, capsys, earlier_run, flags, message):
    inputs, labels, output = earlier_run
    (labels.parent / "short.csv").write_text("img_0.png,1\nimg_1.png,2\n")
    (labels.parent / "bad.csv").write_text("img_0.png,1\nimg_1.png,1001\nimg_2.png,3\n")
    fields = {
        "short": labels.parent / "short.csv",
        "bad": labels.parent / "bad.csv",
        "inputs": inputs,
        "labels": labels,
        "checkpoint": write_checkpoint(labels.parent / "other.ckpt", {"w": np.zeros(2)}),
    }
    args = [f"--input_dir={inputs}", f"--output_dir={output}", "--max_epsilon=4"]
    before = snapshot(output), snapshot(inputs)
    assert cli(*args, *(flag.format(**fields) for flag in flags)) == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert (snapshot(output), snapshot(inputs)) == before


def test_mismatched_sizes_are_all_named(cli, capsys, earlier_run):
    inputs, _, output = earlier_run
    Image.fromarray(smooth_image(7, 320)).save(inputs / "wide.png")
    Image.fromarray(smooth_image(8, 224)).save(inputs / "small.png")
    assert cli(f"--input_dir={inputs}", f"--output_dir={output}", "--attack=fgsm") == 2
    error = capsys.readouterr().err
    assert "2 image(s) are not 299x299" in error
    assert "small.png (224x224)" in error and "wide.png (320x320)" in error


def test_required_flags(cli, capsys):
    assert cli("--attack=fgsm") == 2
    assert "--input_dir, --output_dir and --attack are required" in capsys.readouterr().err


# ---------------------------------------------------------------- end to end (subprocesses)


def test_submissions_are_in_the_competition_format():
    expected = {"fgsm": "attack", "eot_pgd": "attack", "targeted_eot_pgd": "targeted_attack"}
    assert sorted(p.name for p in SUBMISSIONS.iterdir() if p.is_dir()) == sorted(expected)
    for name, kind in expected.items():
        metadata = json.loads((SUBMISSIONS / name / "metadata.json").read_text())
        assert metadata["type"] == kind
        assert metadata["entry_point"] == "run_attack.sh"
        assert metadata["container"] and metadata["container_gpu"]
        assert os.access(SUBMISSIONS / name / "run_attack.sh", os.X_OK)
    result = subprocess.run(
        [str(SUBMISSIONS / "fgsm" / "run_attack.sh"), "only", "two"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.slow
def test_bad_labels_exit_2_from_the_command_line(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=1)
    labels = tmp_path / "labels.csv"
    labels.write_text("img_0.png,0\n")
    result = run_generate(
        f"--input_dir={inputs}",
        f"--output_dir={tmp_path / 'out'}",
        "--attack=fgsm",
        f"--labels_file={labels}",
    )
    assert result.returncode == 2
    assert "generate_adversarial: error: label file" in result.stderr
    assert "line 1: label 0 of img_0.png is outside 1..1000" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("fgsm_run")
def test_fgsm_outputs(fgsm_run):
    inputs, output, _ = fgsm_run
    assert sorted(p.name for p in output.glob("*.png")) == NAMES
    assert_within(inputs, output, 4)
    rows = read_stats(output)
    assert [rows[name]["label"] for name in NAMES] == ["3", "500", "1000"]
    for name in NAMES:
        row = rows[name]
        original = read_png(inputs / name).astype(np.float64)
        floats = np.load(output / "float" / f"{name}.npy")
        png = read_png(output / name).astype(np.float64)
        # FGSM moves every pixel by the full budget, except where [0, 255] clips it.
        assert float(row["linf_float"]) == pytest.approx(4, abs=1e-3)
        assert float(row["linf_png"]) == 4
        assert float(row["l2_png"]) == pytest.approx(np.sqrt(((png - original) ** 2).sum()), 1e-4)
        assert float(row["l2_float"]) == pytest.approx(
            np.sqrt(((floats - original) ** 2).sum()), 1e-4
        )
        for kind in ("float", "png"):
            assert row[f"success_{kind}"] == str(int(row[f"prediction_{kind}"] != row["label"]))
    settings = json.loads((output / "settings.json").read_text())
    assert settings["settings"]["attack"] == "fgsm"
    assert settings["settings"]["params"] == {"epsilon": 4.0}
    assert "float/<name>.npy" in settings["outputs"]  # written with --save_float


@pytest.mark.slow
@pytest.mark.xdist_group("fgsm_run")
def test_second_run_skips_everything(fgsm_run):
    inputs, output, checkpoint = fgsm_run
    before = {p.name: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    result = run_submission(
        "fgsm", inputs, output, 4, checkpoint, f"--labels_file={output.parent / 'labels.csv'}"
    )
    assert result.returncode == 0, result.stderr
    assert "all 3 images are already done" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.xdist_group("fgsm_run")
def test_partial_output_is_completed(fgsm_run, tmp_path):
    inputs, finished, checkpoint = fgsm_run
    output = tmp_path / "out"
    shutil.copytree(finished, output)
    # As if interrupted: img_0 before its PNG was written, img_1 before its stats row.
    (output / "img_0.png").unlink()
    rows = read_stats(output)
    del rows["img_1.png"]
    with open(output / "stats.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, STATS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows.values())
    untouched = (output / "img_2.png").stat().st_mtime_ns
    labels = finished.parent / "labels.csv"
    result = run_submission(
        "fgsm", inputs, output, 4, checkpoint, f"--labels_file={labels} --save_float"
    )
    assert result.returncode == 0, result.stderr
    assert "attacked 2 image(s), 1 already done" in result.stderr
    assert (output / "img_2.png").stat().st_mtime_ns == untouched
    assert read_stats(output) == read_stats(finished)
    for name in NAMES:
        np.testing.assert_array_equal(read_png(output / name), read_png(finished / name))


@pytest.mark.slow
def test_targeted_pgd_with_the_dataset_csv(irv2_checkpoint, tmp_path):
    inputs = make_inputs(tmp_path / "in", count=2)
    dataset = tmp_path / "dev_dataset.csv"
    dataset.write_text(
        "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass\n"
        "img_0,u,0,0,1,1,10,20\nimg_1,u,0,0,1,1,11,21\n"
    )
    output = tmp_path / "out"
    result = run_generate(
        f"--input_dir={inputs}",
        f"--output_dir={output}",
        "--attack=pgd",
        "--targeted",
        f"--labels_file={dataset}",
        f"--target_file={dataset}",
        "--epsilon=6",
        "--step_size=2",
        "--steps=2",
        f"--checkpoint_path={irv2_checkpoint}",
        "--seed=1",
    )
    assert result.returncode == 0, result.stderr
    assert_within(inputs, output, 6, names=NAMES[:2])
    rows = read_stats(output)
    assert [(rows[n]["label"], rows[n]["target"]) for n in NAMES[:2]] == [
        ("10", "20"),
        ("11", "21"),
    ]
    assert all(0 < float(row["linf_png"]) <= 6 for row in rows.values())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "max_epsilon"), [("eot_pgd", 8), ("targeted_eot_pgd", 12)])
def test_eot_submissions_stay_within_max_epsilon(irv2_checkpoint, tmp_path, name, max_epsilon):
    inputs = make_inputs(tmp_path / "in", count=2)
    targeted = name.startswith("targeted")
    if targeted:
        (inputs / "target_class.csv").write_text("img_0.png,17\nimg_1.png,900\n")
    output = tmp_path / "out"
    result = run_submission(
        name,
        inputs,
        output,
        max_epsilon,
        irv2_checkpoint,
        "--samples=2 --steps=1 --num_iterations=1 --seed=3",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.glob("*.png")) == NAMES[:2]
    assert_within(inputs, output, max_epsilon, names=NAMES[:2])
    rows = read_stats(output)
    settings = json.loads((output / "settings.json").read_text())
    assert settings["settings"]["config"] == "challenge"
    # no --save_float: only what was written is described
    assert not (output / "float").exists() and "float/" not in settings["outputs"]
    assert settings["settings"]["params"]["epsilon"] == max_epsilon
    if targeted:
        assert [rows[n]["target"] for n in NAMES[:2]] == ["17", "900"]
    else:
        # No labels in the competition: the defense's own clean prediction is attacked.
        assert all(row["label"] == row["clean_prediction"] for row in rows.values())
