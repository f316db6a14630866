"""run_competition on Ray: the pieces run as Ray tasks side by side, the outputs are
the local run's (timings aside), the time limit holds in a worker, each piece's
record says where it ran, a docker piece gets its task's GPUs, and bad executor
flags are refused before anything runs."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from attacks.competition import runner
from attacks.competition.submissions import Submission
from attacks.competition.work import PieceTask, run_piece
from tests.support.competition_submissions.fixtures import (
    TOYS,
    competition_args,
    link_toys,
    make_dataset,
    run_script,
    toy_env,
)

pytestmark = pytest.mark.xdist_group("ray")
ATTACKS = ("offset", "broken", "target", "hang")
DEFENSES = ("crash", "decode", "messy")
COMPARED = (
    "accuracy_on_attacks.csv",
    "accuracy_on_targeted_attacks.csv",
    "hit_target_class.csv",
    "defense_ranking.csv",
    "attack_ranking.csv",
    "targeted_attack_ranking.csv",
    "all_classification.csv",
)


def without_timings(value):
    """`value` (parsed JSON) without its "seconds" entries."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def compete(root: Path, dataset, *flags: str) -> subprocess.CompletedProcess:
    attacks = link_toys(root / "attacks", *ATTACKS)
    defenses = link_toys(root / "defenses", *DEFENSES)
    args = competition_args(
        root, dataset, attacks_dir=attacks, targeted_attacks_dir=attacks, defenses_dir=defenses
    )
    return run_script(
        *args,
        "--epsilon=cycle",
        "--batch_size=4",
        "--time_limit=3",
        "--grace_period=1",
        "--save_all_classification",
        *flags,
        env=toy_env(root),
        timeout=600,
    )


@pytest.mark.slow
def test_ray_writes_the_local_outputs_and_keeps_the_time_limit(tmp_path):
    dataset = make_dataset(tmp_path)
    local = compete(tmp_path / "local", dataset)
    ray = compete(tmp_path / "ray", dataset, "--executor=ray", "--cpus_per_task=0.5")
    assert local.returncode == ray.returncode == 1, (local.stderr, ray.stderr)
    for name in COMPARED:
        ours = (tmp_path / "ray" / "output" / name).read_bytes()
        assert ours == (tmp_path / "local" / "output" / name).read_bytes(), name
    scores = [
        without_timings(json.loads((tmp_path / run / "output" / "scores.json").read_text()))
        for run in ("local", "ray")
    ]
    assert scores[0] == scores[1]
    assert any("stopped at the 3 s time limit" in problem for problem in scores[1]["problems"])

    records = [
        json.loads(path.read_text())
        for path in sorted((tmp_path / "ray" / "intermediate").rglob("piece.json"))
    ]
    parts = list((tmp_path / "ray" / "intermediate" / "all_adv_examples").glob("*/part_*"))
    assert len(records) == len(ATTACKS) * 2 + len(DEFENSES) * len(parts)
    assert all(record["execution"]["node"] != "local" for record in records)
    workers = {record["execution"]["worker"] for record in records}
    assert len(workers) > 1, workers  # side by side in several worker processes
    hung = [r for r in records if r["key"]["submission"]["name"] == "hang"]
    assert {r["outcome"]["status"] for r in hung} == {runner.TIMEOUT}
    assert all(r["outcome"]["seconds"] < 30 for r in hung)
    assert not list((tmp_path / "ray").rglob("input/")), "input folders are removed"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--executor=ray", "--ray_address=127.0.0.1:9"],
            "--ray_address 127.0.0.1:9: no Ray cluster answers there",
        ),
        (["--ray_address=127.0.0.1:6379"], "--ray_address needs --executor 'ray'"),
        (["--executor=ray", "--gpus_per_task=-1"], "--gpus_per_task must be a number >= 0"),
    ],
)
def test_bad_executor_flags_exit_2_within_seconds(tmp_path, flags, message):
    dataset = make_dataset(tmp_path)
    start = time.monotonic()
    result = compete(tmp_path, dataset, *flags)
    assert time.monotonic() - start < 30
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"run_competition: error: {message}"), line
    assert not (tmp_path / "output").exists() and not (tmp_path / "intermediate").exists()


def test_more_gpus_per_task_than_any_node_has_is_refused_before_any_piece(tmp_path):
    dataset = make_dataset(tmp_path)
    result = compete(tmp_path, dataset, "--executor=ray", "--gpus_per_task=1")
    assert result.returncode == 2, result.stderr
    assert "--gpus_per_task=1 but the cluster's largest node has 0 GPU(s)" in result.stderr
    assert not list((tmp_path / "intermediate").rglob("piece.json"))


def test_a_docker_piece_gets_the_gpus_of_its_task(tmp_path, monkeypatch):
    submission = Submission("a", "defense", tmp_path, "run.sh", "image:1")
    on_all = runner.Runtime(runner.DOCKER, gpu=True)
    assert "all" in on_all.defense(submission, tmp_path, tmp_path / "r.csv").command
    given = runner.Runtime(runner.DOCKER, gpu=True, devices=("1", "3"))
    command = given.defense(submission, tmp_path, tmp_path / "r.csv").command
    assert command[command.index("--gpus") + 1] == '"device=1,3"'
    without = runner.Runtime(runner.DOCKER, devices=("1",))
    assert "--gpus" not in without.defense(submission, tmp_path, tmp_path / "r.csv").command

    # In a worker, the piece's runtime takes the GPUs Ray assigned to its task.
    seen = []
    monkeypatch.setattr("attacks.execution.executor.assigned_gpus", lambda: ("2",))

    def recorded(invocation, **_):
        seen.append(invocation.command)
        return runner.Outcome(runner.OK, 0.0, 0)

    monkeypatch.setattr(runner, "run", recorded)
    monkeypatch.setattr("attacks.competition.containment.become_subreaper", lambda: True)
    task = PieceTask(
        label="defense a",
        submission=submission,
        runtime=on_all,
        folder=tmp_path / "piece",
        files={},
        sources={},
        store=None,  # type: ignore[arg-type]  (no input files to read)
        ledger_dir=tmp_path,
        time_limit=None,
        grace_period=1.0,
        dataset=(),
        names=frozenset(),
    )
    run_piece(task)
    assert seen[0][seen[0].index("--gpus") + 1] == '"device=2"'


def test_every_node_must_see_the_competitions_files(cluster, tmp_path):
    """Before any piece, each node checks the dataset images (by digest), the
    submissions' entry points and the intermediate directory the driver uses."""
    from attacks.competition.harness import Options, prepare
    from attacks.execution.executor import RayExecutor
    from defense.common.errors import InputError

    cluster, nodes = cluster
    dataset, metadata = make_dataset(tmp_path)
    shutil.copytree(TOYS / "noop", tmp_path / "attacks" / "noop")
    competition = prepare(
        Options(
            defenses_dir=link_toys(tmp_path / "defenses", "decode"),
            dataset_dir=dataset,
            dataset_metadata=metadata,
            intermediate_results_dir=tmp_path / "intermediate",
            output_dir=tmp_path / "output",
            attacks_dir=tmp_path / "attacks",
        )
    )
    executor = RayExecutor(ray_address=cluster.address)
    try:
        competition.check_shared(executor)
        (dataset / "img3.png").write_bytes(b"changed")
        (tmp_path / "attacks" / "noop" / "run.sh").unlink()
        with pytest.raises(InputError, match="nodes of the cluster do not see") as error:
            competition.check_shared(executor)
    finally:
        executor.close()
    message = str(error.value)
    for node in nodes:
        assert f"({node.node_id[:8]}): img3.png (missing or other content), submission noop (" in (
            message
        )
    assert not (tmp_path / "intermediate" / ".shared").exists()
    assert not list((tmp_path / "intermediate").rglob("piece.json"))
