"""run_competition against hostile submissions: an attack that rewrites the dataset, a
defense that overwrites the shared pool, one that forges another's records, one that
leaves a detached daemon, one whose result.csv is a FIFO, one with a 200 KB CSV field,
and a harness killed with SIGKILL in the middle of a piece.

The honest submissions (noop, decode) must be scored exactly as without the hostile
ones, the dataset must be intact or its change reported (exit 1), and no process of
any piece may outlive the run.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.competition_submissions.fixtures import (
    SCRIPT,
    TOYS,
    calls,
    competition_args,
    leftovers,
    link_toys,
    make_dataset,
    pids,
    read_rows,
    run_script,
    toy_env,
)


def _link(folder: Path, toy: str, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(TOYS / toy, target_is_directory=True)


def _scores(root: Path) -> dict:
    return json.loads((root / "output" / "scores.json").read_text())


def test_an_attack_that_rewrites_the_dataset_is_clipped_against_the_clean_images(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop", "vandal")
    defenses = link_toys(tmp_path / "defenses", "decode")
    result = run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        env=toy_env(tmp_path),
    )
    assert result.returncode == 1, result.stderr
    report = _scores(tmp_path)
    vandal = report["attacks"]["vandal"]
    # img0 (red 16) and img1 (red 48) against vandal's red 240, clipped at epsilon 16.
    assert vandal["mean_linf"] == 16.0
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode"],
        ["noop", "2"],
        ["vandal", "0"],
    ]
    assert any(
        "dataset_dir changed during the run" in problem and "img0.png" in problem
        for problem in report["problems"]
    ), report["problems"]


def test_a_defense_that_overwrites_the_pool_changes_nothing_for_the_others(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "decode")
    _link(defenses, "sabotage", "aaa_sabotage")
    args = competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses)
    result = run_script(*args, env=toy_env(tmp_path))
    assert result.returncode == 1, result.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "aaa_sabotage", "decode"],
        ["noop", "1", "2"],
    ]
    report = _scores(tmp_path)
    assert any(
        "aaa_sabotage" in problem and "changed its input" in problem
        for problem in report["problems"]
    ), report["problems"]

    (defenses / "aaa_sabotage").unlink()
    again = run_script(*args, env=toy_env(tmp_path))
    assert again.returncode == 0, again.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode"],
        ["noop", "2"],
    ]


def test_an_attack_that_overwrites_the_clipped_images_of_another_changes_nothing(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop", "offset")
    _link(attacks, "clipper", "zz_clipper")
    defenses = link_toys(tmp_path / "defenses", "decode")
    args = competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses)
    result = run_script(*args, env=toy_env(tmp_path))
    assert result.returncode == 0, result.stderr
    expected = [["", "decode"], ["noop", "2"], ["offset", "0"], ["zz_clipper", "2"]]
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == expected
    again = run_script(*args, env=toy_env(tmp_path))  # resumed: the store repairs nothing
    assert again.returncode == 0, again.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == expected


def test_a_forged_record_is_not_used(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "decode", "forger")
    args = competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses)
    env = toy_env(tmp_path)
    assert run_script(*args, env=env).returncode == 0
    record = tmp_path / "intermediate/defenses_output/decode/batch_000_part_00/piece.json"
    assert set(json.loads(record.read_text())["output"]["labels"].values()) == {1}

    again = run_script(*args, env=env)
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode", "forger"],
        ["noop", "2", "2"],
    ]
    assert calls(tmp_path)["decode batch_000_part_00"] == 2
    assert "piece.json was changed outside the harness" in again.stderr


def test_detached_descendants_end_with_their_piece(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "daemon", "decode")
    result = run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        env=toy_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert len(pids(tmp_path)) == 1
    assert not leftovers(tmp_path)


def test_a_harness_killed_with_sigkill_leaves_no_piece_running(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "slow")
    args = competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses)
    env = toy_env(tmp_path)
    harness = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--time_limit=0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not pids(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        harness.send_signal(signal.SIGKILL)
        harness.wait(timeout=30)
    finally:
        harness.kill()
    assert len(pids(tmp_path)) == 1
    again = run_script(*args, "--time_limit=2", "--grace_period=0.5", env=env)
    assert again.returncode == 1, again.stderr
    assert not leftovers(tmp_path)


def test_hostile_files_cost_their_submission_only(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "bigfield", "decode", "fifo")
    started = time.monotonic()
    result = run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        "--time_limit=20",
        env=toy_env(tmp_path),
        timeout=120,
    )
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "bigfield", "decode", "fifo"],
        ["noop", "2", "2", "0"],
    ]
    problems = " ".join(_scores(tmp_path)["problems"])
    assert "result.csv is a FIFO, not a regular file" in problems
    assert "skipped 1 malformed row(s)" in problems


def test_a_run_with_every_hostile_submission_scores_the_honest_ones_as_without_them(tmp_path):
    """The issue's run: a dataset-rewriting attack, a pool-overwriting defense, a FIFO
    result.csv, a 200 KB CSV field and a setsid daemon, beside honest noop and decode."""
    honest = tmp_path / "honest"
    dataset = make_dataset(honest, count=2)
    args = competition_args(
        honest,
        dataset,
        attacks_dir=link_toys(honest / "attacks", "noop"),
        defenses_dir=link_toys(honest / "defenses", "decode"),
    )
    assert run_script(*args, env=toy_env(honest)).returncode == 0
    clean = {path.name: path.read_bytes() for path in dataset[0].iterdir()}

    hostile = tmp_path / "hostile"
    dataset = make_dataset(hostile, count=2)
    defenses = link_toys(hostile / "defenses", "bigfield", "daemon", "decode", "fifo")
    _link(defenses, "sabotage", "aaa_sabotage")
    args = competition_args(
        hostile,
        dataset,
        attacks_dir=link_toys(hostile / "attacks", "noop", "vandal"),
        defenses_dir=defenses,
    )
    started = time.monotonic()
    result = run_script(*args, "--time_limit=20", env=toy_env(hostile), timeout=200)
    assert time.monotonic() - started < 2 * 20 * 7  # well within the 14 pieces' limits
    assert result.returncode == 1, result.stderr
    rows = read_rows(hostile / "output" / "accuracy_on_attacks.csv")
    column = rows[0].index("decode")
    assert {row[0]: row[column] for row in rows[1:]} == {"noop": "2", "vandal": "0"}
    assert read_rows(honest / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode"],
        ["noop", "2"],
    ]
    report = _scores(hostile)
    assert report["attacks"]["vandal"]["mean_linf"] == 16.0
    problems = " ".join(report["problems"])
    assert "dataset_dir changed during the run: img0.png, img1.png" in problems
    assert "first seen after attack vandal batch_000" in problems
    assert "aaa_sabotage batch_000 part 00: changed its input" in problems
    assert "result.csv is a FIFO, not a regular file" in problems
    assert "skipped 1 malformed row(s)" in problems
    assert {path.name: path.read_bytes() for path in dataset[0].iterdir()} != clean
    assert not leftovers(hostile)
