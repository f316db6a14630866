"""The image as the Dockerfile builds it, run by a real Docker engine the ways the
competition runs it: the README's call, the NIPS 2017 toolkit's call (the submission at
/code, its checkpoint inside it), the cloud worker's call (`--network=none -m=24g
--cpus`, input read-only, an output folder of root's, no --user), bad mounts, the image
size against the validator's 8 GiB, and every step of the GPU job that needs no GPU.

Marked `docker`; skipped (saying why) where no engine answers, as in CI, which keeps the
native replay of tests/system/test_docker.py. The base image comes from
$DEFENSE_TEST_BASE_IMAGE, else the local stand-in that scripts/build_standin_base.sh
builds (Docker Hub is not reachable everywhere). Each call's command line, exit code and
wall time go to the transcript file named by $DOCKER_TRANSCRIPT (default: under the
test's temporary folder), printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.container_image import CHECKPOINT, CHECKPOINT_SUFFIXES, REPO, SUBMISSIONS
from tests.support.container_mounts import NAMES, make_read_only, read_png, snapshot, write_pngs

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.xdist_group("docker")]

STANDIN_BASE = "randomization-defense-base:bookworm-py3.11"
TAG = "randomization-defense:engine-test"
MAX_IMAGE_BYTES = 8 * 1024**3  # the competition validator's MAX_DOCKER_IMAGE_SIZE
HARNESS_USER = (1000, 1000)  # who runs the toolkit (its os.mkdir makes 0755 folders)
NOISE = ("oneDNN", "fontManager", "cuda", "absl::InitializeLog", "Traceback")


def docker(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="module")
def engine() -> str:
    """The engine's version; skip where no `docker` answers."""
    if not shutil.which("docker"):
        pytest.skip("no docker command: the real-engine tests need a Docker engine")
    try:
        found = docker("version", "--format", "{{.Server.Version}}", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("the Docker engine did not answer within 30 s")
    if found.returncode != 0:
        pytest.skip(f"no Docker engine reachable: {found.stderr.strip().splitlines()[-1:]}")
    return found.stdout.strip()


class Transcript:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def add(self, argv: list[str], returncode: int, seconds: float, note: str = "") -> None:
        with self.path.open("a") as handle:
            handle.write(f"$ {shlex.join(argv)}\n# exit {returncode}, {seconds:.1f} s{note}\n")


@pytest.fixture(scope="module")
def transcript(tmp_path_factory, engine) -> Iterator[Transcript]:
    path = Path(os.environ.get("DOCKER_TRANSCRIPT") or tmp_path_factory.mktemp("t") / "log")
    record = Transcript(path)
    record.add(["docker", "version"], 0, 0.0, f" (engine {engine})")
    yield record
    print(f"\n--- docker transcript ({path})\n{path.read_text()}")


@pytest.fixture(scope="module")
def base_image(transcript) -> str:
    chosen = os.environ.get("DEFENSE_TEST_BASE_IMAGE")
    if chosen:
        return chosen
    if docker("image", "inspect", STANDIN_BASE).returncode == 0:
        return STANDIN_BASE
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip(
            "no base image: set DEFENSE_TEST_BASE_IMAGE, or run as root with debootstrap "
            "installed to build the stand-in (scripts/build_standin_base.sh)"
        )
    start = time.monotonic()
    built = subprocess.run(
        [str(REPO / "scripts" / "build_standin_base.sh"), STANDIN_BASE],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    transcript.add(
        ["scripts/build_standin_base.sh", STANDIN_BASE], built.returncode, time.monotonic() - start
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return STANDIN_BASE


@pytest.fixture(scope="module")
def image(base_image, transcript) -> str:
    """The image built from the Dockerfile (build network: the host's)."""
    argv = ["docker", "build", "--network=host", "--build-arg", f"BASE_IMAGE={base_image}"]
    argv += ["-t", TAG, str(REPO)]
    start = time.monotonic()
    built = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - start
    size = docker("image", "inspect", "-f", "{{.Size}}", TAG).stdout.strip()
    transcript.add(argv, built.returncode, seconds, f"; image {size} bytes")
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return TAG


@pytest.fixture(scope="module")
def checkpoints(irv2_checkpoint, tmp_path_factory) -> Path:
    """A folder holding the generated checkpoint under the model's file name."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for suffix in CHECKPOINT_SUFFIXES:
        shutil.copyfile(f"{irv2_checkpoint}{suffix}", folder / f"{CHECKPOINT}{suffix}")
    make_read_only(folder)
    return folder


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    write_pngs(folder)
    make_read_only(folder)
    return folder


def made_by(folder: Path, owner: tuple[int, int]) -> Path:
    """A 0755 folder of `owner`, as a harness running as that user makes it."""
    folder.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(folder, *owner)
    return folder


def run(transcript: Transcript, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    argv = ["docker", "run", "--rm", *args]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    transcript.add(argv, result.returncode, time.monotonic() - start)
    return result


def readme_call(
    transcript: Transcript,
    image: str,
    images: Path,
    output: Path,
    *options: str,
    checkpoints: Path | None = None,
) -> subprocess.CompletedProcess:
    """The README's call, `options` before the image, the checkpoint folder mounted
    at /app/checkpoints when given."""
    mounts = ["-v", f"{checkpoints}:/app/checkpoints:ro"] if checkpoints else []
    return run(
        transcript,
        *options,
        *mounts,
        "-v", f"{images}:/input:ro",
        "-v", f"{output}:/output",
        image, "/input", "/output/result.csv",
    )  # fmt: skip


def labels(path: Path) -> dict[str, int]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    assert all(len(row) == 2 for row in rows), rows
    return {name: int(label) for name, label in rows}


def assert_quiet(stderr: str) -> None:
    for noise in NOISE:
        assert noise not in stderr, stderr


def defense_submission(folder: Path, checkpoints: Path | None) -> Path:
    """This repository as the toolkit mounts a defense: entry point, metadata, scripts
    and, when given, its own checkpoints/."""
    folder.mkdir()
    for name in ("run_defense.sh", "metadata.json"):
        shutil.copy2(REPO / name, folder / name)
    shutil.copytree(REPO / "scripts", folder / "scripts", ignore=shutil.ignore_patterns("__py*"))
    if checkpoints is not None:
        shutil.copytree(checkpoints, folder / "checkpoints")
    make_read_only(folder)
    return folder


def test_image_fits_the_validators_limit(image):
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    assert size < MAX_IMAGE_BYTES, f"{size / 1024**3:.2f} GiB"
    listing = docker("run", "--rm", "--entrypoint", "ls", image, "-A", "/app", "/app/checkpoints")
    assert listing.returncode == 0, listing.stderr
    for absent in ("tests", ".git", ".github", ".ci", f"{CHECKPOINT}.index"):
        assert absent not in listing.stdout.split(), listing.stdout


def test_help_explains_the_calls_and_mounts(image, transcript):
    result = run(transcript, image, "--help")
    assert result.returncode == 0, result.stderr
    for words in ("/app/checkpoints", "-v SUBMISSION:/code -w /code", "--tmpfs /tmp"):
        assert words in result.stdout, words


def test_readme_call(image, transcript, checkpoints, images, tmp_path):
    """The README's call, the output folder being the caller's (uid 1000 here)."""
    output = made_by(tmp_path / "output", HARNESS_USER)
    before = snapshot(images)
    result = readme_call(transcript, image, images, output, checkpoints=checkpoints)
    assert result.returncode == 0, result.stderr
    assert sorted(labels(output / "result.csv")) == NAMES
    assert (output / "result.csv").stat().st_uid == HARNESS_USER[0]
    assert snapshot(images) == before
    assert_quiet(result.stderr)


def test_readme_call_locked_down(image, transcript, checkpoints, images, tmp_path):
    """Read-only root with a tmpfs, no capabilities, no new privileges, a memory cap,
    no network: runs as the --user given."""
    output = made_by(tmp_path / "output", HARNESS_USER)
    result = readme_call(
        transcript, image, images, output,
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "-m=24g", "--network=none",
        "--user", "{}:{}".format(*HARNESS_USER),
        checkpoints=checkpoints,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(labels(output / "result.csv")) == NAMES
    assert_quiet(result.stderr)


def test_a_checkpoint_baked_in_on_purpose(image, transcript, checkpoints, images, tmp_path):
    """The README's way to bake a checkpoint in: a layer on top, the checkpoint folder as
    the context; then no mount is needed."""
    baked = f"{image}-baked"
    dockerfile = f"FROM {image}\nCOPY . /app/checkpoints/\n"
    argv = ["docker", "build", "-t", baked, "-f-", str(checkpoints)]
    built = subprocess.run(argv, input=dockerfile, capture_output=True, text=True, timeout=600)
    transcript.add(argv, built.returncode, 0.0)
    assert built.returncode == 0, built.stderr
    try:
        output = made_by(tmp_path / "output", HARNESS_USER)
        result = readme_call(transcript, baked, images, output)
        assert result.returncode == 0, result.stderr
        assert sorted(labels(output / "result.csv")) == NAMES
    finally:
        docker("rmi", baked, timeout=120)


def test_read_only_root_without_a_temporary_folder(
    image, transcript, checkpoints, images, tmp_path
):
    output = made_by(tmp_path / "output", HARNESS_USER)
    result = readme_call(transcript, image, images, output, "--read-only", checkpoints=checkpoints)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "no writable temporary folder" in lines[0], result.stderr
    assert "--tmpfs /tmp" in lines[0]


def test_toolkit_defense_call(image, transcript, checkpoints, images, tmp_path):
    """run_attacks_and_defenses.py's call: the submission at /code holds the checkpoint,
    nothing is mounted at /app/checkpoints, the harness made the output folder (0755,
    its own user) and passes no --user: the result is written as that user."""
    submission = defense_submission(tmp_path / "submission", checkpoints)
    output = made_by(tmp_path / "output", HARNESS_USER)
    entry = json.loads((submission / "metadata.json").read_text())["entry_point"]
    result = run(
        transcript,
        "-v", f"{images}:/input_images",
        "-v", f"{output}:/output_data",
        "-v", f"{submission}:/code",
        "-w", "/code",
        image, f"./{entry}", "/input_images", "/output_data/result.csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(labels(output / "result.csv")) == NAMES
    assert (output / "result.csv").stat().st_uid == HARNESS_USER[0]
    assert_quiet(result.stderr)


def test_cloud_worker_call(image, transcript, checkpoints, images, tmp_path):
    """worker.py's call: no network, memory and CPU caps, input read-only, a fresh copy of
    the submission at /code, an output folder of root's (0755) and no --user: only root
    may write there, and the entry point says so."""
    submission = defense_submission(tmp_path / "submission", checkpoints)
    output = made_by(tmp_path / "output", (0, 0))
    result = run(
        transcript,
        "--network=none", "-m=24g", "--cpus=2",
        "-v", f"{images}:/input_images:ro",
        "-v", f"{output}:/output_data",
        "-v", f"{submission}:/code",
        "-w", "/code",
        image, "./run_defense.sh", "/input_images", "/output_data/result.csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(labels(output / "result.csv")) == NAMES
    assert "docker-entrypoint: running as root: only root may write /output_data" in result.stderr


def test_toolkit_attack_call(image, transcript, checkpoints, images, tmp_path):
    """An attack submission (submissions/fgsm) under the toolkit's call, its checkpoint
    inside the submission folder: PNGs within the budget, written as the harness user."""
    submission = tmp_path / "fgsm"
    shutil.copytree(SUBMISSIONS / "fgsm", submission)
    shutil.copytree(checkpoints, submission / "checkpoints")
    make_read_only(submission)
    output = made_by(tmp_path / "output", HARNESS_USER)
    result = run(
        transcript,
        "-v", f"{images}:/input_images",
        "-v", f"{output}:/output_images",
        "-v", f"{submission}:/code",
        "-w", "/code",
        image, "./run_attack.sh", "/input_images", "/output_images", "16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in output.glob("*.png")) == NAMES
    for name in NAMES:
        difference = np.abs(read_png(output / name) - read_png(images / name))
        assert difference.max() <= 16, name
        assert (output / name).stat().st_uid == HARNESS_USER[0]
    settings = json.loads((output / "settings.json").read_text())
    assert "float/" not in settings["outputs"], settings["outputs"]


@pytest.mark.parametrize("case", ["no checkpoint", "read-only output", "no input", "empty input"])
def test_bad_mounts_fail_clearly(image, transcript, checkpoints, images, tmp_path, case):
    output = made_by(tmp_path / "output", HARNESS_USER)
    empty = tmp_path / "empty"
    empty.mkdir()
    mounts = {
        "no checkpoint": ["-v", f"{images}:/input:ro", "-v", f"{output}:/output"],
        "read-only output": [
            "-v", f"{checkpoints}:/app/checkpoints:ro",
            "-v", f"{images}:/input:ro",
            "-v", f"{output}:/output:ro",
        ],
        "no input": ["-v", f"{checkpoints}:/app/checkpoints:ro", "-v", f"{output}:/output"],
        "empty input": [
            "-v", f"{checkpoints}:/app/checkpoints:ro",
            "-v", f"{empty}:/input:ro",
            "-v", f"{output}:/output",
        ],
    }[case]  # fmt: skip
    result = run(transcript, *mounts, image, "/input", "/output/result.csv")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()
    assert message and message[0].startswith("run_defense: error: "), result.stderr
    expected = {
        "no checkpoint": "/code/checkpoints), then in /app/checkpoints",
        "read-only output": "/output",
        "no input": "/input",
        "empty input": "/input",
    }[case]
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (output / "result.csv").exists()


# ---------------------------------------------------------------- the GPU job


def workflow_steps() -> list[dict]:
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "gpu.yml").read_text())
    return workflow["jobs"]["gpu"]["steps"]


# What a machine without a GPU changes in the job's steps: no --gpus, no --check_gpu,
# no check of the GPU device in the log, a small benchmark, and the engine's network.
NEEDS_A_GPU = {"NVIDIA driver", "TensorFlow sees a GPU (fails at once if not)"}
NOT_A_SHELL_STEP = {"Upload the benchmark"}


def without_a_gpu(script: str, base_image: str) -> str:
    script = script.replace("--gpus all ", "").replace(" --check_gpu", "")
    script = "\n".join(line for line in script.splitlines() if "/device:GPU:0" not in line)
    script = script.replace(
        'docker build -t "$IMAGE" .',
        f'docker build --network=host --build-arg BASE_IMAGE={base_image} -t "$IMAGE" .',
    )
    script = script.replace("docker run --detach ", "docker run --detach --network=host ")
    return script.replace("--images=64", "--images=1 --num_iterations=2 --nobaseline --noxla")


def test_gpu_job_steps_without_a_gpu(image, base_image, transcript, tmp_path):
    """The GPU job's own steps, in order, on a copy of the checkout: every one but the
    GPU checks runs and passes; the gpu tests are skipped, not failing collection."""
    workspace = tmp_path / "workspace"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        if (REPO / name).is_file():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, workspace / name)
    env = {
        **os.environ,
        "IMAGE": "randomization-defense:ci",
        "CONTAINER": f"randomization-defense-gpu-test-{os.getpid()}",
        "GITHUB_WORKSPACE": str(workspace),
    }
    ran = []
    try:
        for step in workflow_steps():
            name = step.get("name", step.get("uses", ""))
            if "run" not in step or name in NEEDS_A_GPU | NOT_A_SHELL_STEP:
                continue
            script = without_a_gpu(step["run"], base_image)
            start = time.monotonic()
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                cwd=workspace, env=env, capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            seconds = time.monotonic() - start
            transcript.add([f"[gpu.yml step] {name}"], result.returncode, seconds)
            output = f"{name}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            assert result.returncode == 0, output
            ran.append((name, result.stdout))
    finally:
        docker("rm", "--force", env["CONTAINER"], timeout=120)
    outputs = dict(ran)
    summary = outputs["GPU tests"].strip().splitlines()[-1]
    assert re.fullmatch(r"=+ \d+ skipped, \d+ deselected in .*", summary), outputs["GPU tests"]
    assert "Competition entry point on the GPU (the image as shipped, samples/)" in outputs
    assert "Benchmark on the GPU" in outputs
