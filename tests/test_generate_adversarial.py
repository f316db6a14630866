"""Adversarial image generation: label files, atomic outputs, resuming, the CLI, submissions.

Unit tests use a stand-in attacker; the end-to-end tests run the CLI and the
competition entry points (subprocesses) on generated 299x299 PNGs with the
generated Inception-ResNet-v2 checkpoint, and check the epsilon bound on the
rounded PNGs as the competition runtime would.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attacks.dataset import (
    LabelError,
    labels_for,
    read_labels,
    read_targets,
    write_npy_atomic,
    write_png_atomic,
)
from attacks.evaluation import read_adversarial_set
from attacks.generate import (
    STATS_COLUMNS,
    Attacker,
    AttackSettings,
    GenerateResult,
    RunRecord,
    attack_params,
    check_image_sizes,
    generate_directory,
    make_settings,
    prepare_output_dir,
    to_outputs,
)
from defense.images import InputError, to_model_input, write_atomic
from slim_reference.checkpoint_writer import write_checkpoint
from tiny_models import tiny_classifier

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "generate_adversarial.py"
SUBMISSIONS = REPO / "submissions"
NAMES = ["img_0.png", "img_1.png", "img_2.png"]


def smooth_image(seed: int, size: int = 299) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def make_inputs(folder: Path, count: int = 3, size: int = 299) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(smooth_image(i, size)).save(folder / f"img_{i}.png")
    return folder


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def read_stats(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "stats.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == STATS_COLUMNS
        return {row["image"]: row for row in reader}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_within(inputs: Path, outputs: Path, epsilon: float, names=NAMES):
    for name in names:
        original = read_png(inputs / name).astype(int)
        adversarial = read_png(outputs / name).astype(int)
        assert adversarial.shape == original.shape
        assert np.abs(adversarial - original).max() <= epsilon, name


# ---------------------------------------------------------------- label files


def test_plain_label_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffa.png,1\n\nb.png, 1000 ,extra column\n", encoding="utf-8")
    assert read_labels(path) == {"a.png": 1, "b.png": 1000}
    assert read_targets(path) == {"a.png": 1, "b.png": 1000}


def test_nips_dataset_csv(tmp_path):
    path = tmp_path / "dev_dataset.csv"
    path.write_text(
        "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,"
        "AuthorProfileURL\n"
        "0c7ac4a8c9dfa802,https://x/a.jpg,0.1,0.2,0.9,0.8,306,110,u,l,a,p\n"
        "e2cf1b7a1b6a2b62,https://x/b.jpg,0,0,1,1,1,1000,u,l,a,p\n"
    )
    assert read_labels(path) == {"0c7ac4a8c9dfa802.png": 306, "e2cf1b7a1b6a2b62.png": 1}
    assert read_targets(path) == {"0c7ac4a8c9dfa802.png": 110, "e2cf1b7a1b6a2b62.png": 1000}
    path.write_text("ImageId,TrueLabel\nabc,5\n")
    with pytest.raises(LabelError, match="no TargetClass column"):
        read_targets(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,0\n", r"line 1: label 0 of a.png is outside 1\.\.1000"),
        ("a.png,5\nb.png,1001\n", r"line 2: label 1001 of b.png is outside 1\.\.1000"),
        ("a.png,cat\n", "line 1: label 'cat' of a.png is not an integer"),
        ("filename,label\na.png,3\n", "line 1: label 'label' of filename"),
        ("a.png\n", "line 1: expected <filename>,<label>"),
        ("a.png,3\na.png,4\n", "line 2: a.png has label 4 here and 3 on line 1"),
    ],
)
def test_bad_label_lines_are_named(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelError, match=message):
        read_labels(path)


def test_every_bad_line_is_reported_at_once(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a.png,0\nb.png,x\nc.png,3\n")
    with pytest.raises(LabelError, match=r"line 1: .*line 2: "):
        read_labels(path)


def test_number_of_classes_is_configurable(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text("a.png,0\nb.png,9\n")
    assert read_labels(path, num_classes=10, first_label=0) == {"a.png": 0, "b.png": 9}
    with pytest.raises(LabelError, match=r"outside 1\.\.10"):
        read_labels(path, num_classes=10)


def test_missing_labels_name_the_images(tmp_path):
    assert labels_for(["b.png"], {"a.png": 1, "b.png": 2}, source="x.csv") == {"b.png": 2}
    with pytest.raises(LabelError, match=r"x\.csv has no label for 2 image\(s\): c\.png, d\.png"):
        labels_for(["a.png", "c.png", "d.png"], {"a.png": 1}, source="x.csv")
    with pytest.raises(LabelError, match="cannot read label file"):
        read_labels(tmp_path / "absent.csv")


# ---------------------------------------------------------------- atomic writers


def test_png_and_npy_round_trip(tmp_path):
    pixels = smooth_image(1)
    write_png_atomic(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), pixels)
    values = np.random.default_rng(0).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    write_npy_atomic(tmp_path / "a.npy", values)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), values)
    with pytest.raises(ValueError, match="uint8"):
        write_png_atomic(tmp_path / "b.png", values)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


# ---------------------------------------------------------------- settings


def test_attack_defaults_and_budget():
    assert attack_params("fgsm", {}) == {"epsilon": 2.0}
    assert attack_params("fgsm", {}, max_epsilon=8) == {"epsilon": 8}
    pgd = attack_params("pgd", {})
    assert pgd["epsilon"] == 16 and pgd["step_size"] == 2.0 and pgd["steps"] == 10
    assert attack_params("eot_pgd", {}, max_epsilon=4)["step_size"] == 0.5
    assert attack_params("eot_pgd", {"step_size": 1.0})["samples"] == 30
    assert attack_params("deepfool", {}) == {"nb_candidate": 10, "overshoot": 0.02, "max_iter": 50}
    assert attack_params("cw", {"confidence": 5.0})["confidence"] == 5.0


@pytest.mark.parametrize(
    ("attack", "given", "message"),
    [
        ("fgsm", {"epsilon": 300}, r"\(0, 255\]"),
        ("fgsm", {"epsilon": 0}, r"\(0, 255\]"),
        ("pgd", {"epsilon": 4, "step_size": 5}, "step size"),
        ("pgd", {"steps": 0}, "steps"),
        ("eot_pgd", {"samples": 0}, "samples"),
        ("deepfool", {"epsilon": 4}, "minimal-perturbation.*--max_epsilon"),
        ("deepfool", {"overshoot": -1}, "overshoot"),
        ("cw", {"binary_search_steps": 0}, "binary_search_steps"),
        ("deepfool", {"overshoot": float("nan")}, "overshoot must be a finite number"),
        ("cw", {"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ("cw", {"confidence": float("inf")}, "confidence must be a finite number"),
        ("cw", {"initial_const": float("nan")}, "initial_const must be a finite number"),
        ("pgd", {"epsilon": float("nan")}, r"\(0, 255\]"),
        ("pgd", {"step_size": float("nan")}, "step size"),
        ("fgsm", {"epsilon": float("nan")}, r"\(0, 255\]"),
        ("fgsm", {"steps": 3}, "--steps does not apply to fgsm"),
        ("bim", {}, "unknown attack 'bim'"),
    ],
)
def test_bad_hyper_parameters(attack, given, message):
    with pytest.raises(ValueError, match=message):
        attack_params(attack, given)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attack": "fgsm", "scenario": "nope"}, "unknown scenario 'nope'"),
        ({"attack": "fgsm", "model": "vgg16"}, "unknown model 'vgg16'"),
        ({"attack": "eot_pgd", "scenario": "single_pattern"}, "does not apply"),
        ({"attack": "eot_pgd", "config": "nope"}, "unknown config"),
        ({"attack": "pgd", "config": "paper"}, "--config applies to eot_pgd only"),
        ({"attack": "deepfool", "targeted": True}, "untargeted"),
        ({"attack": "fgsm", "max_epsilon": 0}, "max_epsilon"),
        ({"attack": "fgsm", "max_epsilon": 256}, "max_epsilon"),
    ],
)
def test_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        make_settings(options.pop("attack"), **options)


def test_image_size_follows_the_scenario():
    assert make_settings("fgsm").image_size == 299
    assert make_settings("eot_pgd").config == "paper"
    assert make_settings("eot_pgd").image_size == 299
    assert make_settings("fgsm", scenario="one_pixel_padding").image_size == 330


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


# ---------------------------------------------------------------- generation with a stand-in


class StandIn:
    """An attacker without a network: brightness decides the label; the attack adds noise."""

    def __init__(self, settings: AttackSettings, fail_on_call: int | None = None):
        self.settings = settings
        self.fail_on_call = fail_on_call
        self.calls = 0

    def predict(self, images):
        return np.where(np.asarray(images).mean(axis=(1, 2, 3)) > 0, 2, 1)

    def attack(self, images, labels):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        noise = np.random.default_rng(self.calls).uniform(-0.2, 0.2, images.shape)
        return np.clip(images + noise, -1, 1).astype(np.float32)


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


def test_targeted_stats_and_another_runs_output_is_refused(tmp_path):
    inputs = make_inputs(tmp_path / "in", count=2)
    settings = make_settings("pgd", {"steps": 1}, targeted=True, max_epsilon=4)
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    record.write_settings({"note": "test"})
    targets = {"img_0.png": 2, "img_1.png": 7}
    generate_directory(
        sorted(inputs.iterdir()),
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
    with pytest.raises(
        ValueError, match=r"holds the output of another run \(steps=1 there, 2 now\)"
    ):
        RunRecord(
            tmp_path / "out", make_settings("pgd", {"steps": 2}, targeted=True, max_epsilon=4)
        )
    (tmp_path / "out" / "settings.json").unlink()
    with pytest.raises(ValueError, match=r"exists without settings\.json"):
        RunRecord(tmp_path / "out", settings)


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
    attacker = Attacker(settings, tiny_model, seed=0, num_iterations=2, chunk_size=1)
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


# ---------------------------------------------------------------- the CLI, in process


@pytest.fixture(scope="module")
def cli():
    """Runs the command's main() in this process (bad inputs stop before any model is loaded)."""
    from attacks.cli import generate_adversarial as module

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
        (["--attack=fgsm", "--epsilon=300"], r"epsilon must be in \(0, 255\]"),
        (["--attack=pgd", "--epsilon=4", "--step_size=8"], "step size"),
        (["--attack=deepfool", "--epsilon=4"], "does not apply to deepfool"),
        (["--attack=fgsm", "--max_epsilon=300"], "max_epsilon"),
        (["--attack=fgsm", "--scenario=twice"], "unknown scenario 'twice'"),
        (["--attack=fgsm", "--model=vgg16"], "unknown model 'vgg16'"),
        (["--attack=bim"], "unknown attack 'bim'"),
        (["--attack=fgsm", "--samples=3"], "--samples does not apply to fgsm"),
        (["--attack=fgsm", "--num_iterations=3"], "applies to eot_pgd only"),
        (["--attack=fgsm", "--batch_size=0"], "batch_size"),
        (["--attack=fgsm", "--targeted"], "needs target classes.*target_class.csv"),
        (["--attack=fgsm", "--target_file={short}"], "applies to --targeted attacks only"),
        (["--attack=fgsm", "--scenario=one_pixel_padding"], "not 330x330"),
        (["--attack=fgsm", "--epsilon=3", "--max_epsilon=4"], "holds the output of another run"),
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


def run_script(*args, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--noprogress", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_submission(name, inputs, output, max_epsilon, checkpoint, flags=""):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "ATTACK_CHECKPOINT": str(checkpoint),
        "ATTACK_FLAGS": f"--noprogress {flags}",
    }
    return subprocess.run(
        [str(SUBMISSIONS / name / "run_attack.sh"), str(inputs), str(output), str(max_epsilon)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


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
    result = run_script(
        f"--input_dir={inputs}",
        f"--output_dir={tmp_path / 'out'}",
        "--attack=fgsm",
        f"--labels_file={labels}",
    )
    assert result.returncode == 2
    assert "generate_adversarial: error: label file" in result.stderr
    assert "line 1: label 0 of img_0.png is outside 1..1000" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def fgsm_run(irv2_checkpoint, tmp_path_factory):
    """The FGSM submission at MAX_EPSILON 4, with true labels and float copies, batches of 2."""
    root = tmp_path_factory.mktemp("fgsm")
    inputs = make_inputs(root / "in")
    labels = root / "labels.csv"
    labels.write_text("img_0.png,3\nimg_1.png,500\nimg_2.png,1000\n")
    output = root / "out"
    result = run_submission(
        "fgsm",
        inputs,
        output,
        4,
        irv2_checkpoint,
        f"--labels_file={labels} --save_float --batch_size=2 --seed=0",
    )
    assert result.returncode == 0, result.stderr
    return inputs, output, irv2_checkpoint


@pytest.mark.slow
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


@pytest.mark.slow
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
    result = run_script(
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
    assert settings["settings"]["params"]["epsilon"] == max_epsilon
    if targeted:
        assert [rows[n]["target"] for n in NAMES[:2]] == ["17", "900"]
    else:
        # No labels in the competition: the defense's own clean prediction is attacked.
        assert all(row["label"] == row["clean_prediction"] for row in rows.values())


# ---------------------------------------------------------------- judging a generated set

EVALUATE = REPO / "scripts" / "evaluate_adversarial.py"


def run_evaluate(*args):
    return subprocess.run(
        [sys.executable, str(EVALUATE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_evaluate_judges_the_float_copies_and_says_so(fgsm_run, tmp_path):
    _, output, checkpoint = fgsm_run
    result_file = tmp_path / "result.json"
    result = run_evaluate(
        f"--adversarial_dir={output}",
        "--source=float",
        f"--checkpoint_path={checkpoint}",
        "--runs=1",
        "--seed=0",
        f"--output_file={result_file}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("float (the float adversarials before rounding")
    judged = json.loads(result_file.read_text())
    assert (judged["source"], judged["images"]) == ("float", 3)
    assert (judged["model"], judged["scenario"]) == ("ens_adv_inception_resnet_v2", "vanilla")
    # The vanilla target model is the model stats.csv judged the float adversarials on.
    rows = read_stats(output).values()
    correct = sum(row["prediction_float"] == row["label"] for row in rows)
    assert judged["target_accuracy"] == pytest.approx(correct / 3)
    assert 0 <= judged["defense_accuracy"] <= 1


@pytest.fixture
def judged_set(tmp_path):
    """An output directory of a stand-in fgsm run on two images, without float copies."""
    inputs = make_inputs(tmp_path / "in", count=2)
    settings = make_settings("fgsm", max_epsilon=4)
    record = RunRecord(prepare_output_dir(tmp_path / "out", inputs), settings)
    generate_directory(sorted(inputs.iterdir()), record, StandIn(settings), progress=False)
    return tmp_path / "out"


def test_adversarial_set_reads_pngs_and_labels(judged_set):
    adversarial = read_adversarial_set(judged_set, "png")
    rows = read_stats(judged_set)
    assert adversarial.names == NAMES[:2]
    assert adversarial.labels.tolist() == [int(rows[name]["label"]) for name in NAMES[:2]]
    (images, labels), *rest = adversarial.batches(8, 299)
    assert not rest and images.shape == (2, 299, 299, 3)
    assert labels.tolist() == adversarial.labels.tolist()
    np.testing.assert_array_equal(images[1], to_model_input(read_png(judged_set / NAMES[1])))
    relabelled = read_adversarial_set(judged_set, "png", labels={NAMES[0]: 7, NAMES[1]: 9})
    assert relabelled.labels.tolist() == [7, 9]


@pytest.mark.parametrize(
    ("source", "labels", "message"),
    [
        ("float", None, r"2 image\(s\) have no float copy .*--save_float"),
        ("png", {NAMES[0]: 5}, r"no label for img_1\.png"),
        ("jpeg", None, "unknown source 'jpeg'"),
    ],
)
def test_adversarial_set_refuses_what_it_cannot_judge(judged_set, source, labels, message):
    with pytest.raises((InputError, ValueError), match=message):
        read_adversarial_set(judged_set, source, labels=labels)


def test_adversarial_set_needs_a_stats_file(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*stats\.csv"):
        read_adversarial_set(tmp_path, "png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--adversarial_dir is required"),
        (["--adversarial_dir={made}", "--scenario=bogus"], "unknown scenario 'bogus'"),
        (["--adversarial_dir={made}", "--checkpoint_path={made}/x.ckpt"], "x.ckpt"),
        (["--adversarial_dir={made}", "--output_file={made}"], "is a directory"),
        (["--adversarial_dir={made}", "--output_file={made}/no/x.json"], "does not exist"),
        (["--adversarial_dir={made}", "--runs=0"], "--runs=0"),
    ],
)
def test_evaluate_bad_input_exits_2(judged_set, args, message):
    result = run_evaluate(*(arg.format(made=judged_set) for arg in args))
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr


def test_an_unreadable_image_is_reported_and_the_rest_attacked(tmp_path, capsys):
    from defense import cli

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
