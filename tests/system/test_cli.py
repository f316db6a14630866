"""The command-line programs as installed: fast `--help`, quiet TensorFlow start, the
checkpoint directory rule, and clear errors for multi-GPU without GPUs."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from defense.common import cli

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "run_defense": "defense.cli.run_defense",
    "download_checkpoints": "defense.cli.download_checkpoints",
    "inspect_checkpoint": "defense.cli.inspect_checkpoint",
    "generate_adversarial": "attacks.cli.generate_adversarial",
    "evaluate_adversarial": "attacks.cli.evaluate_adversarial",
    "run_competition": "attacks.cli.run_competition",
    "reproduce_paper": "attacks.cli.reproduce_paper",
    "make_dataset": "attacks.cli.make_dataset",
}


def command(name: str) -> str:
    """The console command installed beside this interpreter (by `pip install`)."""
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} is not installed beside {sys.executable}; pip install ."
    return str(path)


def quiet_env(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environment, **extra}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_defining_the_flags_imports_no_tensorflow(name):
    code = f"import sys, {COMMANDS[name]}; assert 'tensorflow' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_console_command_help_from_another_directory(name, tmp_path):
    result = subprocess.run(
        [command(name), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert name in result.stdout and "flags" in result.stdout.lower()
    assert result.stderr == ""  # no TensorFlow start-up lines: TensorFlow is not imported


def test_a_failing_run_prints_only_its_own_message(tmp_path):
    result = subprocess.run(
        [command("run_defense"), f"--input_dir={REPO / 'samples'}", "--output_file=x.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=quiet_env(),
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("run_defense: error: no checkpoint at checkpoints/"), (
        result.stderr
    )
    for noise in cli.TENSORFLOW_NOISE:
        assert noise not in result.stderr
    assert "cudart_stub" not in result.stderr and "cpu_feature_guard" not in result.stderr


def test_no_writable_temporary_folder_is_one_line_and_exit_2(tmp_path):
    """As under `docker run --read-only` without `--tmpfs /tmp`: no place `tempfile`
    tries can take a file (here its one candidate is a folder that does not exist)."""
    code = (
        "import sys, tempfile; tempfile.tempdir = None; "
        f"tempfile._candidate_tempdir_list = lambda: [{str(tmp_path / 'missing')!r}]; "
        "from defense.cli import run_defense; sys.argv = ['run_defense', *sys.argv[1:]]; "
        "run_defense.run()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, f"--input_dir={REPO / 'samples'}", "--output_file=x.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=quiet_env(),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"run_defense: error: {cli.NO_TEMPORARY_FOLDER}"]


def failing_run(*flags: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`run_defense` on the samples without a checkpoint: it imports TensorFlow, then exits 2."""
    return subprocess.run(
        [command("run_defense"), f"--input_dir={REPO / 'samples'}", "--output_file=x.csv", *flags],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=quiet_env(**env),
        timeout=300,
    )


@pytest.mark.parametrize("level", ["1", "2", "3"])
def test_a_log_level_the_user_set_hides_the_start_up_lines_below_it(tmp_path, level):
    """TensorFlow prints its start-up lines (oneDNN's note, twice) before any log level
    applies; a level the user set hides those below it as TensorFlow's own lines are."""
    result = failing_run(cwd=tmp_path, TF_CPP_MIN_LOG_LEVEL=level)
    assert result.returncode == 2
    before, _, error = result.stderr.partition("run_defense: error: ")
    assert error.startswith("no checkpoint"), result.stderr
    # What TensorFlow does show at this level: error lines (CUDA probing) below level 3.
    assert all(line.startswith("E") for line in before.splitlines()), result.stderr
    if level == "3":
        assert before == ""
    assert "oneDNN custom operations are on" not in result.stderr
    assert "cpu_feature_guard" not in result.stderr and "cudart_stub" not in result.stderr


def test_a_log_level_of_0_hides_nothing(tmp_path):
    code = (
        "import os; from defense.common import cli; cli.import_tensorflow(); "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=quiet_env(TF_CPP_MIN_LOG_LEVEL="0"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert cli.TENSORFLOW_NOISE[0] in result.stderr


def test_checkpoint_dir_rule(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.CHECKPOINT_DIR_ENV, raising=False)
    assert cli.default_checkpoint("a.ckpt") == Path("checkpoints") / "a.ckpt"
    monkeypatch.setenv(cli.CHECKPOINT_DIR_ENV, str(tmp_path))
    assert cli.default_checkpoint("a.ckpt") == tmp_path / "a.ckpt"


def test_missing_checkpoint_in_the_container_names_the_mount(monkeypatch):
    monkeypatch.setenv(cli.CHECKPOINT_DIR_ENV, "/app/checkpoints")
    monkeypatch.delenv(cli.CONTAINER_ENV, raising=False)
    assert "download_checkpoints" in cli.checkpoint_hint("a.ckpt")
    assert cli.output_hint() == ""
    monkeypatch.setenv(cli.CONTAINER_ENV, "1")
    assert "-v /path/to/checkpoints:/app/checkpoints:ro" in cli.checkpoint_hint("a.ckpt")
    assert "--user" in cli.output_hint()


def test_too_many_iterations_are_refused_before_anything_runs(tmp_path):
    result = failing_run("--num_iterations=2000000000", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "run_defense: error: --num_iterations must be <= 10000, got 2000000000"
    ), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def sees_a_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("precision", ["float16", "bfloat16", "float32"])
def test_float16_on_a_cpu_is_announced_once(tmp_path, precision):
    if sees_a_gpu():
        pytest.skip("checks the CPU notice; with a GPU float16 is the fast mixed precision")
    result = failing_run(f"--precision={precision}", cwd=tmp_path)
    assert result.returncode == 2
    notices = [line for line in result.stderr.splitlines() if "emulate" in line]
    if precision == "float16":
        assert len(notices) == 1, result.stderr
        assert "--precision=float16" in notices[0] and "--precision=bfloat16" in notices[0]
    else:
        assert notices == []


HOOK = """
import sys
import numpy as np
from defense.common import cli
cli.import_tensorflow()
from defense import ensemble, loading

def out_of_memory():
    import tensorflow as tf
    raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

class Loaded:
    model = None

def load_defended(*args, **kwargs):
    if {stage!r} == "loading":
        out_of_memory()
    return Loaded()

class Ensemble:
    patterns_drawn = 0

    def __init__(self, *args, **kwargs):
        self.batches = 0

    def predict(self, images):
        self.batches += 1
        if self.batches > 1:
            out_of_memory()
        return np.ones(len(images), int)

loading.load_defended = load_defended
ensemble.RandomizedEnsemble = Ensemble
from defense.cli import run_defense
sys.argv = ["run_defense", *sys.argv[1:]]
run_defense.run()
"""


@pytest.mark.parametrize("stage", ["loading", "classifying"])
def test_out_of_memory_is_one_line_and_exit_2(tmp_path, stage):
    """TensorFlow running out of memory (here: made to, at once) is one message naming
    the flags that size the work, not a traceback; finished batches are kept."""
    out = tmp_path / "out.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            HOOK.format(stage=stage),
            f"--input_dir={REPO / 'samples'}",
            f"--output_file={out}",
            "--batch_size=1",
            "--noprogress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=quiet_env(),
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    # Without the info and warning log lines (the defense's settings, the ignored LICENSES.md).
    lines = [line for line in result.stderr.splitlines() if not re.match(r"[IW]\d{4} ", line)]
    message = (
        "run_defense: error: out of memory with --batch_size=1 x --num_iterations=30 "
        "patterns per batch (--chunk_size=16 per forward pass): lower them"
    )
    if stage == "loading":
        assert lines == [message]
        assert not out.exists()
    else:
        assert lines == [f"{message}; what was finished is kept in {out}"]
        assert out.read_text() == "astronaut.png,1\n"


def caught(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (Linux: /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def stopped_while_preparing(args: list[str], delay: float, cwd: Path) -> tuple[int, str]:
    """Start a command, send it SIGTERM `delay` seconds after it began catching SIGTERM
    (a short delay: still importing TensorFlow), return its exit status and stderr."""
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd, env=quiet_env()
    )
    try:
        while not caught(process.pid, signal.SIGTERM):
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.005)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        return process.returncode, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.5, 2.0])
def test_sigterm_while_preparing_is_one_line_and_exit_130(tmp_path, delay):
    args = [command("run_defense"), f"--input_dir={REPO / 'samples'}", "--output_file=x.csv"]
    code, stderr = stopped_while_preparing(args, delay, tmp_path)
    assert (code, stderr) == (cli.EXIT_INTERRUPTED, "run_defense: interrupted\n")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("generate_adversarial", ["--input_dir=in", "--output_dir=out", "--attack=fgsm"]),
        ("evaluate_adversarial", ["--adversarial_dir=in"]),
        ("reproduce_paper", ["--dataset_dir=in", "--output_dir=out", "--table=1"]),
    ],
)
def test_every_tensorflow_command_stops_cleanly_while_preparing(tmp_path, name, args):
    code, stderr = stopped_while_preparing([command(name), *args], 0.5, tmp_path)
    assert (code, stderr) == (cli.EXIT_INTERRUPTED, f"{name}: interrupted\n")


@pytest.mark.slow
def test_mirrored_strategy_without_gpus_exits_2(tmp_path):
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("checks the no-GPU error; with a GPU, tests/system/test_gpu.py runs mirrored")
    result = subprocess.run(
        [
            command("run_defense"),
            f"--input_dir={REPO / 'samples'}",
            f"--output_file={tmp_path / 'out.csv'}",
            "--strategy=mirrored",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "--strategy=mirrored: TensorFlow sees no GPU" in result.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("run_defense", ["--batch_size=0"], "--batch_size=0: 0 is not a positive integer"),
        ("run_defense", ["--num_iterations=0"], "--num_iterations=0"),
        ("run_defense", ["--chunk_size=0"], "--chunk_size=0"),
        ("run_defense", ["--batch_size=abc"], "--batch_size=abc"),
        ("run_defense", ["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
        ("evaluate_adversarial", ["--runs=0"], "--runs=0"),
        ("generate_adversarial", ["--max_epsilon=abc"], "--max_epsilon=abc"),
        ("download_checkpoints", ["--timeout=0"], "--timeout=0"),
    ],
)
def test_flag_errors_exit_2_with_one_message(name, args, message):
    result = subprocess.run([command(name), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{name}: error: flag") or "Unknown" in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_attack_submission_with_a_bad_epsilon_exits_2(tmp_path):
    result = subprocess.run(
        [str(REPO / "submissions" / "fgsm" / "run_attack.sh"), str(tmp_path), str(tmp_path), "abc"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--max_epsilon=abc" in result.stderr


def test_a_write_error_or_an_interruption_is_one_message(capsys):
    def disk_full():
        raise OSError(28, "No space left on device")

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run_writing("prog", "out.csv", disk_full) == cli.EXIT_FATAL
    assert capsys.readouterr().err == (
        "prog: error: cannot write out.csv: No space left on device; what was finished is kept\n"
    )
    assert cli.run_writing("prog", "out.csv", interrupted) == cli.EXIT_INTERRUPTED
    assert "prog: interrupted; what was finished is kept in out.csv" in capsys.readouterr().err
    assert cli.run_writing("prog", "out.csv", lambda: "done") == "done"


FINALIZER_PROGRAM = """
import os, signal, sys, time
from absl import flags
from defense.common import cli

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the signal lands while a finalizer runs
        sum(range(1000))

def main(argv):
    Finalized()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("finished", flush=True)
    return 0

cli.run_program(main, __name__, "prog")
"""


def test_sigterm_landing_in_a_finalizer_still_stops_the_program(tmp_path):
    """Python ignores an exception raised in `__del__` (TensorFlow's function collector
    got SIGTERM there in CI); the stop must still reach the program."""
    script = tmp_path / "program.py"
    script.write_text(FINALIZER_PROGRAM)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert (result.returncode, result.stdout) == (cli.EXIT_INTERRUPTED, ""), result.stderr
    assert result.stderr.endswith("prog: interrupted\n")
