"""Helpers of the adversarial-set tests: input PNGs, stats rows, a stand-in attacker, runs.

Shared by test_adversarial_set, test_generate, test_generate_adversarial_cli and
test_evaluate_adversarial_cli. The stand-in attacker needs no network; the
subprocess helpers run the commands and the competition entry points as the
competition runtime would; `command_module` and `in_process` run a command's main() in
the test's own process (the CLI tests' bad input).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from attacks.evaluation.adversarial_set import STATS_COLUMNS, RunRecord
from attacks.evaluation.generate import generate_directory, prepare_output_dir
from attacks.evaluation.settings import AttackSettings, make_settings

REPO = Path(__file__).resolve().parents[2]
GENERATE = REPO / "scripts" / "generate_adversarial.py"
EVALUATE = REPO / "scripts" / "evaluate_adversarial.py"
SUBMISSIONS = REPO / "submissions"
NAMES = ["img_0.png", "img_1.png", "img_2.png"]


def smooth_image(seed: int, size: int = 299) -> np.ndarray:
    """Smooth uint8 [size, size, 3] pixels (a bicubic upsampling of 6x6 noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def make_inputs(folder: Path, count: int = 3, size: int = 299) -> Path:
    """`folder` holding img_0.png .. img_<count - 1>.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(smooth_image(i, size)).save(folder / f"img_{i}.png")
    return folder


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def read_stats(folder: Path) -> dict[str, dict[str, str]]:
    """The stats rows of an output directory by image, checked to have the stats columns."""
    with open(folder / "stats.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == STATS_COLUMNS
        return {row["image"]: row for row in reader}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_within(inputs: Path, outputs: Path, epsilon: float, names=NAMES) -> None:
    """The output PNGs have the inputs' shapes and lie within `epsilon` of them."""
    for name in names:
        original = read_png(inputs / name).astype(int)
        adversarial = read_png(outputs / name).astype(int)
        assert adversarial.shape == original.shape
        assert np.abs(adversarial - original).max() <= epsilon, name


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


def stand_in_set(root: Path, count: int = 2) -> Path:
    """The output directory of a stand-in fgsm run on `count` images, without float copies."""
    inputs = make_inputs(root / "in", count=count)
    settings = make_settings("fgsm", max_epsilon=4)
    record = RunRecord(prepare_output_dir(root / "out", inputs), settings)
    generate_directory(sorted(inputs.iterdir()), record, StandIn(settings), progress=False)
    return root / "out"


def run_script(script: Path, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command of scripts/ in a subprocess."""
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_generate(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """generate_adversarial (without a progress bar) in a subprocess."""
    return run_script(GENERATE, "--noprogress", *args, timeout=timeout)


def run_evaluate(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """evaluate_adversarial in a subprocess."""
    return run_script(EVALUATE, *args, timeout=timeout)


def run_submission(name, inputs, output, max_epsilon, checkpoint, flags=""):
    """A competition entry point, submissions/<name>/run_attack.sh, on this checkout."""
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


def fgsm_submission_run(root: Path, checkpoint) -> tuple[Path, Path]:
    """The FGSM submission at MAX_EPSILON 4, with true labels and float copies, batches of 2:
    (inputs, output); the labels are root/labels.csv."""
    inputs = make_inputs(root / "in")
    labels = root / "labels.csv"
    labels.write_text("img_0.png,3\nimg_1.png,500\nimg_2.png,1000\n")
    output = root / "out"
    result = run_submission(
        "fgsm",
        inputs,
        output,
        4,
        checkpoint,
        f"--labels_file={labels} --save_float --batch_size=2 --seed=0",
    )
    assert result.returncode == 0, result.stderr
    return inputs, output


def command_module(name: str):
    """Command module `name` (say "attacks.cli.run_competition") imported in this process
    alone among the commands: absl keeps every flag in one registry, and two commands
    both define --output_dir, so the flags of any other command imported earlier (by
    another test on this worker) are removed, and `name` is imported afresh."""
    import importlib
    import sys

    from absl import flags

    for module, defined in list(flags.FLAGS.flags_by_module_dict().items()):
        if module.startswith(("attacks.cli.", "defense.cli.")):
            for flag in list(defined):
                if flag.name in flags.FLAGS:
                    delattr(flags.FLAGS, flag.name)
            sys.modules.pop(module, None)
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def in_process(name: str, capsys, *fixed: str) -> Callable[..., tuple[int, str]]:
    """`run(*args)`: command module `name`'s main() in this process (`command_module`) with
    `fixed` and `args` as its flags, for runs that stop on bad input; (exit status, stderr).

    TensorFlow is imported first, so that main's quiet import of it leaves this process's
    environment alone.
    """
    import tensorflow  # noqa: F401

    module = command_module(name)
    program = name.rsplit(".", 1)[-1]

    def run(*args) -> tuple[int, str]:
        module.FLAGS.unparse_flags()
        code = module.main(module.FLAGS([program, *fixed, *map(str, args)]))
        return code, capsys.readouterr().err

    return run
