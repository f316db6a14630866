"""attacks.benchmark.options and scripts/benchmark_defense.py: the flags parse into a
`BenchmarkOptions` with the command's defaults; bad values are one message and exit 2."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from attacks.benchmark.options import (
    BenchmarkOptions,
    check_model,
    define_flags,
    options_from_flags,
)
from defense.common.errors import ParameterError

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "benchmark_defense.py"

# The command's flags and help texts, as they were when the flags were the script's own.
HELP = {
    "model": "Registry model name.",
    "images": "Images to classify per measurement.",
    "batch_size": "Images per batch (the original used 16).",
    "num_iterations": "Patterns per image.",
    "chunk_size": "Patterns per forward pass in our ensemble.",
    "baseline": "Time the original entry's loop (the fair baseline).",
    "xla": "Also time ours with XLA (jit_compile=True).",
    "digits": "Measure early exit's saving on the trained digits CNN.",
    "bfloat16": "Also time bfloat16 and compare its labels (default: where the CPU has "
    "bfloat16 units, avx512_bf16 or amx_bf16).",
    "intra_op_threads": "TensorFlow intra-op threads (0: its default).",
    "inter_op_threads": "TensorFlow inter-op threads (0: its default).",
    "attacks": "Time the batched attacks against un-batched loops.",
    "executors": "Time a digits robustness card and a toy competition on the local executor "
    "against Ray on this machine; project the full competition and Tables 1-6 on N devices.",
    "memory": "Measure the runner's peak RSS for --memory_images.",
    "memory_images": "Numbers of images for --memory.",
    "seed": "Seed for images, weights and patterns.",
}


def parsed(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    define_flags(values)
    values(["benchmark_defense", *args])
    return values


def test_one_flag_per_field_with_the_commands_help():
    values = parsed()
    assert [field.name for field in dataclasses.fields(BenchmarkOptions)] == list(HELP)
    assert {name: values[name].help for name in HELP} == HELP


def test_default_flags_are_the_default_options():
    options = options_from_flags(parsed())
    assert options == BenchmarkOptions()
    assert options == BenchmarkOptions(
        model="ens_adv_inception_resnet_v2",
        images=16,
        batch_size=16,
        num_iterations=30,
        chunk_size=16,
        baseline=True,
        xla=True,
        digits=True,
        bfloat16=None,
        intra_op_threads=0,
        inter_op_threads=0,
        attacks=False,
        memory=False,
        memory_images=(16, 160),
        seed=0,
    )


def test_flags_parse_into_the_options():
    options = options_from_flags(
        parsed(
            "--images=4",
            "--num_iterations=2",
            "--nobaseline",
            "--noxla",
            "--nobfloat16",
            "--memory_images=8,32",
            "--seed=3",
        )
    )
    assert (options.images, options.num_iterations, options.seed) == (4, 2, 3)
    assert (options.baseline, options.xla, options.bfloat16) == (False, False, False)
    assert options.memory_images == (8, 32)
    assert options_from_flags(parsed("--bfloat16")).bfloat16 is True


@pytest.mark.parametrize(
    "flag", ["--images=0", "--chunk_size=-1", "--intra_op_threads=-2", "--memory_images=16,x"]
)
def test_bad_flag_values_are_flag_errors(flag):
    with pytest.raises(flags.IllegalFlagValueError):
        parsed(flag)


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [
        ({"images": 0}, "images"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"memory_images": ()}, "memory_images"),
        ({"memory_images": (16, 0)}, "memory_images"),
    ],
)
def test_options_check_their_values(changes, parameter):
    with pytest.raises(ParameterError) as raised:
        BenchmarkOptions(**changes)
    assert raised.value.parameters == (parameter,)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BenchmarkOptions().images = 4  # type: ignore[misc]


def test_unknown_model_names_the_known_ones():
    check_model("ens_adv_inception_resnet_v2")
    with pytest.raises(ParameterError, match=r"inception_v3.*got 'nope'"):
        check_model("nope")


def benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images=0"], "flag --images=0: 0 is not a positive integer"),
        (["--memory_images=16,x"], "must be a comma-separated list of positive integers"),
        (["--seed=-1"], "--seed must be >= 0, got -1"),
        (["--model=nope"], "--model must be one of"),
        (["extra"], "unexpected arguments: extra"),
    ],
)
def test_the_command_says_a_bad_value_and_exits_2(args, message):
    result = benchmark(*args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "benchmark_defense: error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_commands_help_lists_its_flags():
    result = benchmark("--help")
    assert result.returncode == 0, result.stderr
    for name in HELP:
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, name
