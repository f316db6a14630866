"""End-to-end: the absl runner and run_defense.sh on generated PNGs and a generated checkpoint.

Runs that stop before classifying (bad flags, locations, checkpoints) call the command's
main() in process; the others run it as a subprocess, as a user would.
"""

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.adversarial_helpers import in_process

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_defense.py"

pytestmark = pytest.mark.slow


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--noprogress", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def smooth_image(seed: int, size=(299, 299)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BICUBIC))


@pytest.fixture
def main(capsys):
    """run_defense's main() in this process: (exit status, stderr)."""
    return in_process("defense.cli.run_defense", capsys, "--noprogress")


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(4):
        Image.fromarray(smooth_image(i)).save(folder / f"image_{i}.png")
    return folder


def read_labels(path: Path) -> dict[str, int]:
    return {
        name: int(label)
        for name, label in (line.split(",") for line in path.read_text().splitlines())
    }


@pytest.fixture(scope="module")
def library_model(irv2_checkpoint):
    """The runner's model, loaded by the library from the generated checkpoint (its users
    share an xdist group, so it is loaded once)."""
    from defense import models

    return models.load("ens_adv_inception_resnet_v2", irv2_checkpoint)


def library_labels(model, folder, config, **overrides):
    """What the library computes for the same run, batch by batch, with the same seed."""
    from defense.common.images import read_image, to_model_input
    from defense.config import load_config
    from defense.ensemble import RandomizedEnsemble

    ensemble = RandomizedEnsemble(model, load_config(config).replace(**overrides), seed=5)
    names = sorted(path.name for path in folder.iterdir())
    images = to_model_input(np.stack([read_image(folder / name).pixels for name in names]))
    labels = np.concatenate([ensemble.predict(images[i : i + 3]) for i in range(0, len(names), 3)])
    return dict(zip(names, labels.tolist(), strict=True))


@pytest.mark.xdist_group("library_model")
def test_runner_labels_equal_the_library(irv2_checkpoint, library_model, input_dir, tmp_path):
    out = tmp_path / "labels.csv"
    result = run_cli(
        "--input_dir",
        input_dir,
        "--output_file",
        out,
        "--checkpoint_path",
        irv2_checkpoint,
        "--num_iterations",
        3,
        "--seed",
        5,
        "--batch_size",
        3,
    )
    assert result.returncode == 0, result.stderr
    labels = read_labels(out)
    assert list(labels) == sorted(labels) and len(labels) == 4
    assert labels == library_labels(library_model, input_dir, "challenge", num_iterations=3)
    assert re.search(r"early exit on: \d+ of 12 pattern-forwards evaluated", result.stderr)
    exhaustive = tmp_path / "exhaustive.csv"
    options = ("--num_iterations", 3, "--seed", 5, "--batch_size", 3, "--noearly_exit")
    result = run_cli(
        "--input_dir",
        input_dir,
        "--output_file",
        exhaustive,
        "--checkpoint_path",
        irv2_checkpoint,
        *options,
    )
    assert result.returncode == 0, result.stderr
    assert read_labels(exhaustive) == labels
    assert "early exit off: 12 of 12 pattern-forwards evaluated (0 saved" in result.stderr


@pytest.mark.xdist_group("library_model")
def test_plain_config_is_the_argmax_of_the_logits(
    irv2_checkpoint, library_model, input_dir, tmp_path
):
    from defense.common.images import read_image, to_model_input

    out = tmp_path / "labels.csv"
    result = run_cli(
        "--input_dir",
        input_dir,
        "--output_file",
        out,
        "--checkpoint_path",
        irv2_checkpoint,
        "--config",
        "none",
        "--class_names",
    )
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in input_dir.iterdir())
    images = to_model_input(np.stack([read_image(input_dir / name).pixels for name in names]))
    expected = np.argmax(library_model(images)["logits"].numpy(), axis=1)
    rows = [line.split(",", 2) for line in out.read_text().splitlines()]
    assert [int(row[1]) for row in rows] == expected.tolist()
    assert all(row[2] for row in rows)


def test_bad_images_are_reported_and_the_rest_classified(irv2_checkpoint, input_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("image_0.png", "image_1.png"):
        (folder / name).write_bytes((input_dir / name).read_bytes())
    Image.fromarray(smooth_image(9, (320, 240))).convert("L").save(folder / "gray_small.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes((input_dir / "image_2.png").read_bytes()[:500])
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    Image.new("RGB", (5000, 5000)).save(folder / "huge.png")
    out = tmp_path / "labels.csv"
    result = run_cli(
        "--input_dir",
        folder,
        "--output_file",
        out,
        "--checkpoint_path",
        irv2_checkpoint,
        "--num_iterations",
        2,
    )
    assert result.returncode == 1
    assert sorted(read_labels(out)) == ["gray_small.png", "image_0.png", "image_1.png"]
    for name, reason in [
        ("empty.png", "empty file"),
        ("truncated.png", "corrupt PNG"),
        ("photo.jpg", "not a PNG"),
        ("huge.png", "decompression-bomb"),
    ]:
        assert any(name in line and reason in line for line in result.stderr.splitlines()), name
    assert "resized to 299x299" in result.stderr


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing", "download_checkpoints.py"),
        ("truncated", "truncated or corrupt"),
        ("other_net", "missing from the checkpoint"),
        ("not_a_checkpoint", "not a readable TensorFlow checkpoint"),
    ],
)
def test_bad_checkpoints_fail_clearly(
    main, irv2_checkpoint, input_dir, tmp_path, problem, expected
):
    import tensorflow as tf

    prefix = tmp_path / "model.ckpt"
    if problem == "truncated":
        for suffix in (".index", ".data-00000-of-00001"):
            data = Path(f"{irv2_checkpoint}{suffix}").read_bytes()
            Path(f"{prefix}{suffix}").write_bytes(
                data if suffix == ".index" else data[: len(data) // 3]
            )
    elif problem == "other_net":
        tf.raw_ops.SaveV2(
            prefix=str(prefix),
            tensor_names=["InceptionV3/Conv2d_1a_3x3/weights"],
            shape_and_slices=[""],
            tensors=[tf.zeros([3, 3, 3, 32])],
        )
    elif problem == "not_a_checkpoint":
        Path(f"{prefix}.index").write_bytes(os.urandom(300))
    code, stderr = main(
        "--input_dir",
        input_dir,
        "--output_file",
        tmp_path / "out.csv",
        "--checkpoint_path",
        prefix,
    )
    assert code == 2
    assert expected in stderr
    assert "ens_adv_inception_resnet_v2_2017_08_18.tar.gz" in stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing_input", "does not exist"),
        ("empty_input", "holds no PNG files"),
        ("missing_output_dir", "output directory"),
        ("bad_config", "unknown config"),
        ("bad_model", "unknown model"),
    ],
)
def test_bad_locations_and_flags_fail_before_loading(main, input_dir, tmp_path, setup, expected):
    folder, out, extra = input_dir, tmp_path / "out.csv", []
    if setup == "missing_input":
        folder = tmp_path / "nowhere"
    elif setup == "empty_input":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif setup == "missing_output_dir":
        out = tmp_path / "no" / "out.csv"
    elif setup == "bad_config":
        extra = ["--config", "chalenge"]
    else:
        extra = ["--model", "resnet_v9"]
    code, stderr = main("--input_dir", folder, "--output_file", out, *extra)
    assert code == 2
    assert expected in stderr


def test_a_canvas_the_model_cannot_take_fails_before_the_weights_load(
    main, irv2_checkpoint, input_dir, tmp_path
):
    config = tmp_path / "tiny.json"
    config.write_text('{"low": 50, "high": 60, "out_size": 60}')
    flags = {"input_dir": input_dir, "output_file": tmp_path / "out.csv", "config": config}
    flags |= {"checkpoint_path": irv2_checkpoint, "model": "inception_resnet_v2"}
    code, stderr = main(*(f"--{name}={value}" for name, value in flags.items()))
    assert code == 2
    assert "config tiny: inception_resnet_v2 cannot take 60x60 inputs" in stderr
    assert "Traceback" not in stderr


def test_an_input_image_as_output_is_refused_and_kept(main, input_dir, tmp_path):
    image = input_dir / "image_0.png"
    before = image.read_bytes()
    for batch_size in ("1", "16"):
        code, stderr = main(
            "--input_dir", input_dir, "--output_file", image, "--batch_size", batch_size
        )
        assert code == 2
        assert "is one of the input images" in stderr
    assert image.read_bytes() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_keeps_the_finished_rows(irv2_checkpoint, tmp_path, signum):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(smooth_image(i)).save(folder / f"image_{i}.png")
    out = tmp_path / "out" / "labels.csv"
    out.parent.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--noprogress",
            f"--input_dir={folder}",
            f"--output_file={out}",
            f"--checkpoint_path={irv2_checkpoint}",
            "--config=paper",
            "--batch_size=1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not (out.exists() and out.read_text()) and process.poll() is None:
        assert time.monotonic() < deadline, "no batch finished"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    rows = out.read_text().splitlines()
    if process.returncode != 0:  # the run may have finished before the signal arrived
        assert process.returncode == 130, stderr
        assert "interrupted; what was finished is kept in" in stderr
        assert "Traceback" not in stderr
    assert 1 <= len(rows) <= 8
    assert all(row.startswith("image_") and row.split(",")[1].isdigit() for row in rows)
    assert os.listdir(out.parent) == ["labels.csv"]


@pytest.mark.parametrize("delay", [1.0, 4.0, 7.0, 10.0])
def test_sigterm_at_any_moment_is_one_message_and_exit_130(
    irv2_checkpoint, input_dir, tmp_path, delay
):
    """Stopped while importing TensorFlow, loading the model or classifying (the run
    takes far longer than the last moment): one line, exit 130, no traceback."""
    from tests.system.test_cli import stopped_while_preparing

    out = tmp_path / "labels.csv"
    args = [sys.executable, str(SCRIPT), "--noprogress", f"--input_dir={input_dir}"]
    args += [f"--output_file={out}", f"--checkpoint_path={irv2_checkpoint}"]
    code, stderr = stopped_while_preparing([*args, "--num_iterations=1000"], delay, tmp_path)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith("run_defense: interrupted"), stderr


def test_a_full_disk_ends_the_run_with_one_message(irv2_checkpoint, input_dir, tmp_path):
    out = tmp_path / "labels.csv"

    def small_disk():  # writes past 40 bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))

    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--noprogress",
            f"--input_dir={input_dir}",
            f"--output_file={out}",
            f"--checkpoint_path={irv2_checkpoint}",
            "--config=paper",
            "--batch_size=1",
        ],
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=900,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot write {out}: File too large; what was finished is kept" in result.stderr
    assert "Traceback" not in result.stderr
    assert [row.split(",")[0] for row in out.read_text().splitlines()] == [
        "image_0.png",
        "image_1.png",
    ]
    assert sorted(os.listdir(tmp_path)) == ["labels.csv"]


def test_competition_entry_point_says_its_usage():
    """run_defense.sh with a wrong number of arguments: its usage, exit 2. (Its call by the
    harness, on images, is tests/system/test_competition_end_to_end.py's.)"""
    usage = subprocess.run(
        [str(REPO / "run_defense.sh"), str(REPO / "samples")], capture_output=True, text=True
    )
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_bundled_samples(irv2_checkpoint, tmp_path):
    out = tmp_path / "samples.csv"
    result = run_cli(
        "--input_dir",
        REPO / "samples",
        "--output_file",
        out,
        "--checkpoint_path",
        irv2_checkpoint,
        "--config",
        "paper",
        "--class_names",
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split(",", 2) for line in out.read_text().splitlines()]
    assert [row[0] for row in rows] == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    assert "ignoring 1 file(s) that are not images: LICENSES.md" in result.stderr


@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("inception_v3", "challenge"),
        ("ens4_adv_inception_v3", "paper"),
        ("resnet_v2_101", "challenge"),
    ],
)
def test_every_architecture_runs(main, model, config, input_dir, tmp_path):
    from defense import models
    from tests.support.slim_reference.checkpoint_writer import (
        deterministic_values,
        write_checkpoint,
    )

    prefix = write_checkpoint(
        tmp_path / "model.ckpt", deterministic_values(models.expected_shapes(model))
    )
    out = tmp_path / "labels.csv"
    result = run_cli(
        "--input_dir",
        input_dir,
        "--output_file",
        out,
        "--checkpoint_path",
        prefix,
        "--model",
        model,
        "--config",
        config,
        "--num_iterations",
        2,
    )
    assert result.returncode == 0, result.stderr
    labels = read_labels(out)
    assert sorted(labels) == [f"image_{i}.png" for i in range(4)]
    assert all(0 <= label <= 1000 for label in labels.values())
    if model == "resnet_v2_101":
        code, stderr = main(
            "--input_dir",
            input_dir,
            "--output_file",
            out,
            "--checkpoint_path",
            prefix,
            "--model",
            model,
            "--aux_head",
            "tf_models",
        )
        assert code == 2
        assert "--aux_head does not apply to resnet_v2_101" in stderr
