"""The docker runtime, without a Docker engine: its command lines, as a stand-in
`docker` on PATH records them, and results equal to the native runtime's (the
stand-in runs the entry point with the container paths mapped to the mounts)."""

import json
import os
import sys

import pytest

from attacks.competition import harness, runner
from attacks.competition.submissions import Submission
from defense.common.cli import in_flags
from defense.common.errors import ParameterError
from tests.support.competition_submissions.fixtures import (
    TOYS,
    competition_args,
    link_toys,
    make_dataset,
    read_rows,
    run_script,
    toy_env,
)

FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] != "run":
    sys.exit(0)
mounts, workdir, i = {{}}, "/", 1
while args[i].startswith("-"):
    if args[i] == "--rm":
        i += 1
        continue
    if args[i] == "-v":
        host, target = args[i + 1].split(":")[:2]
        mounts[target] = host
    elif args[i] == "-w":
        workdir = args[i + 1]
    i += 2
def host(path):
    for target, folder in mounts.items():
        if path == target or path.startswith(target + "/"):
            return folder + path[len(target):]
    return path
os.chdir(host(workdir))
command = [host(arg) for arg in args[i + 1:]]
os.execv(command[0], command)
"""


@pytest.fixture
def docker_env(tmp_path):
    """The toys' environment with the stand-in docker first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return toy_env(
        tmp_path,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_DOCKER_LOG=str(tmp_path / "docker.log"),
    )


def docker_calls(root):
    return [json.loads(line) for line in (root / "docker.log").read_text().splitlines()]


@pytest.mark.parametrize("gpu", [False, True])
def test_docker_command_lines_and_results(tmp_path, docker_env, gpu):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    targeted = link_toys(tmp_path / "targeted", "target")
    defenses = link_toys(tmp_path / "defenses", "decode")
    args = competition_args(
        tmp_path, dataset, attacks_dir=attacks, targeted_attacks_dir=targeted, defenses_dir=defenses
    )
    limits = ["--docker_memory=2g", "--docker_cpus=1.5"] if gpu else []
    result = run_script(
        *args,
        "--runtime=docker",
        "--epsilon=12",
        *(["--gpu"] if gpu else []),
        *limits,
        env=docker_env,
    )
    assert result.returncode == 0, result.stderr
    intermediate = tmp_path / "intermediate"
    image = "toy-gpu:1" if gpu else "toy:1"
    # No network; the cloud's limits where given; inputs and code read-only.
    run_options = ["--network", "none"]
    run_options += ["--memory", "2g", "--cpus", "1.5", "--gpus", "all"] if gpu else []
    noop, target, decode = docker_calls(tmp_path)
    assert noop[:3] == ["run", "--rm", "--name"]
    assert noop[4:] == [
        *run_options,
        "-v",
        f"{intermediate}/attacks_output/noop/batch_000/input:/input_images:ro",
        "-v",
        f"{intermediate}/attacks_output/noop/batch_000/output:/output_images",
        "-v",
        f"{TOYS}/noop:/code:ro",
        "-w",
        "/code",
        image,
        "./run.sh",
        "/input_images",
        "/output_images",
        "12",
    ]
    assert target[4:] == [
        *run_options,
        "-v",
        f"{intermediate}/targeted_attacks_output/target/batch_000/input:/input_images:ro",
        "-v",
        f"{intermediate}/targeted_attacks_output/target/batch_000/output:/output_images",
        "-v",
        f"{TOYS}/target:/code:ro",
        "-w",
        "/code",
        image,
        "./run.sh",
        "/input_images",
        "/output_images",
        "12",
    ]
    assert decode[4:] == [
        *run_options,
        "-v",
        f"{intermediate}/defenses_output/decode/batch_000_part_00/input:/input_images:ro",
        "-v",
        f"{intermediate}/defenses_output/decode/batch_000_part_00/output:/output_data",
        "-v",
        f"{TOYS}/decode:/code:ro",
        "-w",
        "/code",
        image,
        "./run.sh",
        "/input_images",
        "/output_data/result.csv",
    ]
    assert len({noop[3], target[3], decode[3]}) == 3  # a container name per piece
    # The output folders are writable by the container's user, whoever that is.
    assert (intermediate / "attacks_output/noop/batch_000/output").stat().st_mode & 0o777 == 0o777
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode"],
        ["noop", "2"],
    ]
    assert read_rows(tmp_path / "output" / "hit_target_class.csv") == [
        ["", "decode"],
        ["target", "0"],
    ]
    report = json.loads((tmp_path / "output" / "scores.json").read_text())
    assert report["settings"]["runtime"] == "docker"
    assert report["targeted_attacks"]["target"]["mean_linf"] == 12.0
    # The container image is part of a piece's key: with the other image, all run again.
    again = run_script(
        *args, "--runtime=docker", "--epsilon=12", *([] if gpu else ["--gpu"]), env=docker_env
    )
    assert again.returncode == 0, again.stderr
    assert len(docker_calls(tmp_path)) == 6


def test_docker_stop_at_the_time_limit(tmp_path, docker_env):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "hang")
    defenses = link_toys(tmp_path / "defenses", "decode")
    result = run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        "--runtime=docker",
        "--time_limit=1",
        "--grace_period=0.5",
        env=docker_env,
    )
    assert result.returncode == 1, result.stderr
    hang, stop, decode = docker_calls(tmp_path)
    assert stop == ["stop", "--time", "1", hang[3]]
    assert decode[0] == "run"
    report = json.loads((tmp_path / "output" / "scores.json").read_text())
    assert report["attacks"]["hang"]["pieces"][0]["status"] == "timeout"
    assert report["attacks"]["hang"]["images"] == 1


def test_docker_needs_a_container_and_the_command(tmp_path, monkeypatch):
    folder = tmp_path / "defenses" / "plain"
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text('{"type": "defense", "entry_point": "run.sh"}')
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    dataset = make_dataset(tmp_path, count=1)
    options = harness.Options(
        defenses_dir=tmp_path / "defenses",
        dataset_dir=dataset[0],
        dataset_metadata=dataset[1],
        intermediate_results_dir=tmp_path / "intermediate",
        output_dir=tmp_path / "output",
        attacks_dir=link_toys(tmp_path / "attacks", "noop"),
        runtime="docker",
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker here
    with pytest.raises(ParameterError) as raised:
        harness.prepare(options)
    assert (
        in_flags(raised.value) == "--runtime docker needs the docker command, which is not on PATH"
    )
    (tmp_path / "docker").write_text("#!/bin/sh\n")
    (tmp_path / "docker").chmod(0o755)
    with pytest.raises(ParameterError) as raised:
        harness.prepare(options)
    assert in_flags(raised.value).startswith(
        f"--defenses_dir {tmp_path / 'defenses'} holds no usable defense"
    )
    assert "metadata.json: container must be a non-empty string (no such field)" in str(
        raised.value
    )
    # Natively, the container is not needed.
    assert harness.prepare(harness.Options(**{**vars(options), "runtime": "native"})).defenses


def test_native_runtime_passes_host_paths(tmp_path):
    submission = Submission("a", "attack", tmp_path / "a", "bin/run.sh")
    invocation = runner.Runtime().attack(submission, tmp_path / "in", tmp_path / "out", 8)
    assert invocation.command == (
        f"{tmp_path}/a/bin/run.sh",
        f"{tmp_path}/in",
        f"{tmp_path}/out",
        "8",
    )
    assert invocation.cwd == tmp_path / "a"
    assert invocation.stop_command is None
    defense = runner.Runtime().defense(submission, tmp_path / "adv", tmp_path / "d" / "result.csv")
    assert defense.command[1:] == (f"{tmp_path}/adv", f"{tmp_path}/d/result.csv")
