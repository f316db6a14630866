"""evaluate_robustness: bad input exits 2 before any attack runs, and end to end on the
trained digits CNN at tiny settings: card.json, card.md and the plots, reused on a rerun
with the same settings and refused, naming the differences, with others.

The command runs the digits CNN through its model factory hook:
`--model_factory=tests.system.test_evaluate_robustness:digits_models` (this module, on
PYTHONPATH), with the weights the test saved named by $EVALUATE_ROBUSTNESS_DIGITS_WEIGHTS.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_ENV = "EVALUATE_ROBUSTNESS_DIGITS_WEIGHTS"
FACTORY = "--model_factory=tests.system.test_evaluate_robustness:digits_models"
TINY = [
    "--seed=0",
    "--redraws=2",
    "--iterations=3",
    "--samples=2",
    "--sweep_samples=2",
    "--sweep_iterations=2",
    "--cosine_samples=1,4",
    "--epsilons=255",
    "--judge_chunk_size=128",
]
PLOTS = ["accuracy_vs_epsilon", "accuracy_vs_samples", "accuracy_vs_iterations", "gradient_cosine"]


def _entry(class_names):
    from attacks.paper.models import ModelEntry
    from tests.support.digits import DEFENSE, INPUT_SIZE, OUT_SIZE, build_model

    path = os.environ.get(WEIGHTS_ENV)

    def load():
        model = build_model()
        if path:
            model.load_weights(path)
        return model

    weights = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else "none"
    return ModelEntry(
        name="digits",
        load=load,
        weights=weights,
        input_size=INPUT_SIZE,
        out_size=OUT_SIZE,
        config=DEFENSE.replace(num_iterations=2),
        class_names=class_names,
    )


def digits_models():
    """The model factory: the digits CNN (2 patterns per classification) with the weights
    in $EVALUATE_ROBUSTNESS_DIGITS_WEIGHTS (unset: untrained)."""
    return {"digits": _entry([str(digit) for digit in range(10)])}


def digits_claiming_12_classes():
    """A factory whose entry claims 12 classes, while the CNN scores 10."""
    return {"digits": _entry([str(label) for label in range(12)])}


def evaluate(*args, weights=None):
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop(WEIGHTS_ENV, None)
    if weights is not None:
        env[WEIGHTS_ENV] = str(weights)
    script = str(REPO / "scripts" / "evaluate_robustness.py")
    return subprocess.run(
        [sys.executable, script, "--noprogress", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def write_dataset(folder, pixels, labels):
    folder.mkdir()
    lines = []
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        Image.fromarray(image).save(folder / f"digit{i:02d}.png")
        lines.append(f"digit{i:02d}.png,{label}\n")
    (folder / "labels.csv").write_text("".join(lines))
    return folder


def check_fails(result, message):
    assert result.returncode == 2, result.stderr
    assert "evaluate_robustness: error: " in result.stderr and message in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--epsilon=0", "--epsilon must be in (0, 255] pixel units, got 0.0"),
        ("--epsilon=300", "--epsilon must be in (0, 255] pixel units, got 300.0"),
        ("--redraws=0", "--redraws must be >= 1, got 0"),
        ("--tolerance=nan", "--tolerance must be finite and > 0, got nan"),
        ("--tolerance=-1", "--tolerance must be finite and > 0, got -1.0"),
        ("--sweep_iterations=10,0", "--sweep_iterations must be >= 1, got 0"),
        ("--limit=0", "--limit must be >= 1, got 0"),
    ],
)
def test_bad_flags_exit_2_before_anything_runs(command, capsys, tmp_path, flag, message):
    output = tmp_path / "out"
    assert command(FACTORY, f"--dataset_dir={tmp_path}", f"--output_dir={output}", flag) == 2
    error = capsys.readouterr().err
    assert f"evaluate_robustness: error: {message}" in error, error
    assert not output.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--executor=ray", "--ray_address=127.0.0.1:9"],
            "--ray_address 127.0.0.1:9: no Ray cluster answers there",
        ),
        (["--executor=ray", "--ray_address=nowhere"], "--ray_address must be HOST:PORT or auto"),
        (["--ray_address=127.0.0.1:6379"], "--ray_address needs --executor 'ray'"),
        (["--executor=ray", "--cpus_per_task=-1"], "--cpus_per_task must be a number >= 0"),
        (["--executor=ray", "--max_retries=-1"], "--max_retries must be an integer >= 0"),
    ],
)
def test_bad_executor_flags_exit_2_within_seconds(command, capsys, tmp_path, flags, message):
    output = tmp_path / "out"
    start = time.monotonic()
    assert command(FACTORY, f"--dataset_dir={tmp_path}", f"--output_dir={output}", *flags) == 2
    assert time.monotonic() - start < 10
    error = capsys.readouterr().err
    assert f"evaluate_robustness: error: {message}" in error, error
    assert not output.exists()


def test_executor_ray_without_ray_names_the_extra(command, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    output = tmp_path / "out"
    assert (
        command(FACTORY, f"--dataset_dir={tmp_path}", f"--output_dir={output}", "--executor=ray")
        == 2
    )
    error = capsys.readouterr().err
    assert "pip install 'randomization-defense[cluster]'" in error, error


@pytest.fixture(scope="module")
def command():
    """The command's main() in this process: flag checks come before any model or
    TensorFlow, so no subprocess is needed for them."""
    from tests.support.adversarial_helpers import command_module

    module = command_module("attacks.cli.evaluate_robustness")

    def run(*args) -> int:
        module.FLAGS.unparse_flags()
        return module.main(module.FLAGS(["evaluate_robustness", *map(str, args)]))

    yield run
    module.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    ("factory", "output", "labels", "message"),
    [
        ("digits_models", "file/out", [3, 4], "cannot be written"),
        ("digits_models", "out", [3, 10], "label 10 of digit01.png is outside 0..9"),
        (
            "digits_claiming_12_classes",
            "out",
            [3, 11],
            "--labels_file must be classes of the model, in [0, 10), got values in [3, 11]",
        ),
    ],
)
def test_unwritable_output_and_mismatched_labels_exit_2(tmp_path, factory, output, labels, message):
    dataset = write_dataset(tmp_path / "dataset", np.full((2, 32, 32, 3), 128, np.uint8), labels)
    (tmp_path / "file").write_text("not a folder")
    result = evaluate(
        f"--model_factory=tests.system.test_evaluate_robustness:{factory}",
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={tmp_path / output}",
        *TINY,
    )
    check_fails(result, message)
    assert not (tmp_path / output / "card.json").exists()


def check_plot(path):
    data = path.read_bytes()
    if path.suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(path) as image:
            assert np.asarray(image.convert("L")).std() > 5
    else:
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]


def start(*args, weights):
    """The command running in the background, its output in pipes."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), WEIGHTS_ENV: str(weights)}
    script = str(REPO / "scripts" / "evaluate_robustness.py")
    return subprocess.Popen(
        [sys.executable, script, "--noprogress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(path, process, seconds=600):
    """Wait until `path` exists while `process` runs."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} not written in {seconds} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_the_card_of_the_digits_cnn_is_resumed_after_sigterm_then_reused_or_refused(
    digits, digits_correct, tmp_path
):
    """SIGTERM mid-card: exit 130, the finished cells kept; the rerun computes only the
    missing cells (two shards of 3 images) and writes the card; a third run reuses it;
    other settings are refused."""
    weights = tmp_path / "digits.weights.h5"
    digits.model.save_weights(weights)
    images, labels = (a[:8] for a in digits_correct)
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    dataset = write_dataset(tmp_path / "dataset", pixels, labels)
    output = tmp_path / "out"
    args = [
        FACTORY,
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={output}",
        "--limit=6",
        "--shard_size=3",
        *TINY,
    ]
    stopped = start(*args, weights=weights)
    wait_for(output / "cells" / "autoattack_rand.shard0.json", stopped)
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, stderr
    assert f"evaluate_robustness: interrupted; what was finished is kept in {output}" in stderr
    assert "Traceback" not in stderr and not (output / "card.json").exists()
    kept = {path.name: path.read_bytes() for path in (output / "cells").glob("*.shard*")}
    assert "clean.shard0.json" in kept and "autoattack_rand.shard0.npy" in kept

    result = evaluate(*args, weights=weights)
    assert result.returncode == 0, result.stderr
    cells = len(list((output / "cells").glob("*.json"))) - 1  # settings.json
    finished = sum(name.endswith(".json") for name in kept)
    assert f"{cells - finished} cell(s) to compute" in result.stderr
    assert cells == 2 * (1 + 5 + 1 + 1 + 1 + 2 + 1)
    for name, data in kept.items():
        assert (output / "cells" / name).read_bytes() == data, name
    fields = json.loads((output / "card.json").read_text())
    card = fields["robustness_card"]
    assert fields["eps"] == "16/255" and fields["number_forward_passes"] == 2
    assert card["images"] == 6 and card["seed"] == 0 and card["budget"]["iterations"] == 3
    assert card["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert float(fields["clean_acc"]) > 50
    assert [k for k, _ in card["gradient_cosine"]] == [1, 4]
    assert card["budget_sweep"]["values"] == [255.0]
    assert card["budget_sweep"]["accuracies"][0]["mean"] == 0
    assert fields["settings"]["sweep_iterations"] == [2] and fields["settings"]["shard_size"] == 3
    markdown = (output / "card.md").read_text()
    assert markdown.startswith("# Robustness card: digits") and "| autoattack_rand |" in markdown
    assert markdown in result.stdout
    for stem in PLOTS:
        for suffix in (".png", ".pdf"):
            check_plot(output / f"{stem}{suffix}")
    written = (output / "card.json").read_bytes()

    again = evaluate(*args, weights=weights)
    assert again.returncode == 0, again.stderr
    assert "reusing the finished card" in again.stderr
    assert (output / "card.json").read_bytes() == written

    other = evaluate(*args, "--iterations=4", "--seed=1", weights=weights)
    check_fails(other, f"{output / 'card.json'} holds a card made with other settings")
    assert "iterations: 3 in the file, 4 now" in other.stderr
    assert "seed: 0 in the file, 1 now" in other.stderr
    assert (output / "card.json").read_bytes() == written
