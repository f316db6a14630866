"""run_competition with submissions that hang: the time limit (SIGTERM, then SIGKILL
after the grace period), what they wrote before being stopped, processes left
behind, and a run interrupted in the middle of a piece that continues when rerun.

The dataset is img0 and img1 (labels 1 and 2) in one batch at epsilon 16; noop's
two copies and hang's one (img0) make one pool part of 3 images.
"""

import json
import signal
import subprocess
import sys
import time

from tests.support.competition_submissions.fixtures import (
    SCRIPT,
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

LIMIT, GRACE = 2, 0.5


def test_hanging_submissions_are_stopped_and_what_they_wrote_counts(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop", "hang")
    defenses = link_toys(tmp_path / "defenses", "orphan", "slow", "stubborn")
    started = time.monotonic()
    result = run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        f"--time_limit={LIMIT}",
        f"--grace_period={GRACE}",
        env=toy_env(tmp_path),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    # hang, slow and stubborn each take the time limit; stubborn also the grace period.
    assert 3 * LIMIT + GRACE <= elapsed < 3 * LIMIT + GRACE + 30
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "orphan", "slow", "stubborn"],
        ["hang", "1", "1", "1"],
        ["noop", "2", "2", "2"],
    ]
    report = json.loads((tmp_path / "output" / "scores.json").read_text())
    hang = report["attacks"]["hang"]
    assert (hang["images"], hang["missing"], hang["score"]) == (1, 1, 2 * 3 - 3)
    (piece,) = hang["pieces"]
    assert piece["status"] == "timeout"
    assert piece["reason"] == f"stopped at the {LIMIT} s time limit (SIGTERM)"
    assert LIMIT <= piece["seconds"] < LIMIT + 10
    (slow,) = report["defenses"]["slow"]["pieces"]
    assert (slow["status"], slow["reason"]) == (
        "timeout",
        f"stopped at the {LIMIT} s time limit (SIGTERM)",
    )
    (stubborn,) = report["defenses"]["stubborn"]["pieces"]
    assert stubborn["status"] == "timeout"
    assert stubborn["reason"] == (
        f"stopped at the {LIMIT} s time limit (SIGKILL after a {GRACE} s grace period)"
    )
    assert LIMIT + GRACE <= stubborn["seconds"] < LIMIT + GRACE + 10
    (orphan,) = report["defenses"]["orphan"]["pieces"]
    assert orphan["status"] == "ok"
    for name in ("orphan", "slow", "stubborn"):
        assert report["defenses"][name]["normalised_score"] == 1.0
    # slow's shell and orphan's background sleeper: none is left running.
    assert len(pids(tmp_path)) == 2
    assert not leftovers(tmp_path)
    assert any(
        "attack hang batch_000 (epsilon 16): stopped at the 2 s time limit (SIGTERM); no image "
        "for 1 of 2: img1" in problem
        for problem in report["problems"]
    )


def test_an_interrupted_run_continues_where_it_stopped(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    attacks = link_toys(tmp_path / "attacks", "noop")
    defenses = link_toys(tmp_path / "defenses", "decode", "slow")
    args = competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses)
    env = toy_env(tmp_path)
    harness = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--time_limit=0", f"--grace_period={GRACE}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not calls(tmp_path)["slow batch_000_part_00"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # slow is now sleeping, without a time limit
        harness.send_signal(signal.SIGTERM)
        _, stderr = harness.communicate(timeout=60)
    finally:
        harness.kill()
    assert harness.returncode == 130, stderr
    intermediate = tmp_path / "intermediate"
    assert f"interrupted; what was finished is kept in {intermediate}" in stderr
    assert not leftovers(tmp_path)
    assert not (
        intermediate / "defenses_output" / "slow" / "batch_000_part_00" / "piece.json"
    ).exists()
    assert not (tmp_path / "output" / "scores.json").exists()

    again = run_script(*args, f"--time_limit={LIMIT}", f"--grace_period={GRACE}", env=env)
    assert again.returncode == 1, again.stderr  # slow times out
    assert calls(tmp_path) == {
        "noop batch_000": 1,
        "decode batch_000_part_00": 1,
        "slow batch_000_part_00": 2,
    }
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode", "slow"],
        ["noop", "2", "2"],
    ]
