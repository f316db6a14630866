"""Hostile files around a run: submission metadata that is a FIFO, a device, nested
5,000 deep or holds a 5,000-digit number; folder names that are not UTF-8; a dataset
CSV that is a FIFO or has a 200 KB field; a result.csv that is a link to /dev/zero;
stderr with NUL bytes; a stale all_classification.csv. Each costs the submission it
comes from (skipped, with the reason) or is one clear error, never a hang."""

import json
import os
import shutil

import pytest

from attacks.competition.submissions import DEFENSE, discover
from tests.support.competition_submissions.fixtures import (
    TOYS,
    competition_args,
    link_toys,
    make_dataset,
    read_rows,
    run_script,
    toy_env,
    write_metadata,
)

ROOT = os.geteuid() == 0


def _submission(folder, metadata):
    """A defense folder with `metadata` (bytes, a FIFO, or a link) and a runnable entry."""
    folder.mkdir(parents=True)
    shutil.copy(TOYS / "decode" / "run.sh", folder / "run.sh")
    target = folder / "metadata.json"
    if metadata == "fifo":
        os.mkfifo(target)
    elif metadata == "zero":
        target.symlink_to("/dev/zero")
    else:
        target.write_bytes(metadata)
    return folder


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ("fifo", "cannot read metadata.json: a FIFO, not a regular file"),
        ("zero", "cannot read metadata.json: a character device, not a regular file"),
        (b"[" * 5000 + b"]" * 5000, "metadata.json is not valid JSON: JSON nested too deep"),
        (
            b'{"type": "defense", "entry_point": "run.sh", "x": ' + b"9" * 5000 + b"}",
            "metadata.json is not valid JSON: Exceeds the limit (4300 digits)",
        ),
        (b"\xff\xfe", "cannot read metadata.json: 'utf-8' codec can't decode"),
    ],
)
def test_unusable_metadata_skips_its_submission_only(tmp_path, metadata, reason):
    _submission(tmp_path / "defenses" / "bad", metadata)
    link_toys(tmp_path / "defenses", "decode")
    found, skipped = discover(
        tmp_path / "defenses", DEFENSE, parameter="defenses_dir", docker=False
    )
    assert [s.name for s in found] == ["decode"]
    (reason_given,) = skipped.values()
    assert reason_given.startswith(reason), reason_given


def test_a_folder_name_that_is_not_utf8_is_skipped(tmp_path):
    defenses = link_toys(tmp_path / "defenses", "decode")
    os.symlink(TOYS / "decode", os.fsencode(defenses) + b"/bad\xff")
    found, skipped = discover(defenses, DEFENSE, parameter="defenses_dir", docker=False)
    assert [s.name for s in found] == ["decode"]
    ((folder, reason),) = skipped.items()
    assert folder.endswith("bad\\xff")
    assert reason == "the folder name b'bad\\xff' is not UTF-8"
    folder.encode("utf-8")


@pytest.mark.skipif(ROOT, reason="chmod 000 does not stop root")
def test_an_unreadable_submission_folder_is_skipped(tmp_path):
    defenses = link_toys(tmp_path / "defenses", "decode")
    _submission(defenses / "locked", b'{"type": "defense", "entry_point": "run.sh"}')
    (defenses / "locked").chmod(0)
    try:
        found, skipped = discover(defenses, DEFENSE, parameter="defenses_dir", docker=False)
    finally:
        (defenses / "locked").chmod(0o755)
    assert [s.name for s in found] == ["decode"]
    assert "Permission denied" in next(iter(skipped.values()))


def test_plain_escapes_what_markdown_must_not_hold():
    from attacks.competition.scoring import plain

    assert plain("ok name") == "ok name"
    assert plain("a\nb\x00c\rd") == "a\\nb\\x00c\\rd"


def _run(tmp_path, *extra, defenses=("decode",), metadata=None):
    dataset = make_dataset(tmp_path, count=2)
    if metadata is not None:
        dataset = (dataset[0], metadata(tmp_path))
    attacks = link_toys(tmp_path / "attacks", "noop")
    folder = link_toys(tmp_path / "defenses", *defenses)
    return run_script(
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=folder),
        *extra,
        env=toy_env(tmp_path),
        timeout=120,
    )


def test_a_fifo_dataset_metadata_is_refused_at_once(tmp_path):
    def fifo(root):
        os.mkfifo(root / "fifo.csv")
        return root / "fifo.csv"

    result = _run(tmp_path, metadata=fifo)
    assert result.returncode == 2
    assert "--dataset_metadata" in result.stderr
    assert "cannot be read: a FIFO, not a regular file" in result.stderr


def test_a_dataset_csv_field_over_128_kib_is_refused_with_its_line(tmp_path):
    def huge(root):
        path = write_metadata(root / "huge.csv", [("img0", 1, 2), ("img1", 2, 3)])
        with open(path, "a") as handle:
            handle.write("img9," + "x" * 200_000 + ",0,0,4,4,1,1,,,,\n")
        return path

    result = _run(tmp_path, metadata=huge)
    assert result.returncode == 2
    assert "cannot be read: line 4: field larger than field limit" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_result_file_linked_to_dev_zero_costs_its_defense(tmp_path):
    folder = tmp_path / "defenses" / "zero"
    _submission(folder, b'{"type": "defense", "entry_point": "run.sh"}')
    (folder / "run.sh").write_text('#!/bin/sh\nln -s /dev/zero "$2"\n')
    result = _run(tmp_path)
    assert result.returncode == 1, result.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "decode", "zero"],
        ["noop", "2", "0"],
    ]
    problems = json.loads((tmp_path / "output" / "scores.json").read_text())["problems"]
    assert any("result.csv is a character device, not a regular file" in p for p in problems)


def test_summary_md_holds_no_raw_control_characters(tmp_path):
    folder = tmp_path / "defenses" / "noisy"
    _submission(folder, b'{"type": "defense", "entry_point": "run.sh"}')
    (folder / "run.sh").write_text("#!/bin/sh\nprintf 'bad\\000byte\\n' >&2\nexit 3\n")
    result = _run(tmp_path)
    assert result.returncode == 1, result.stderr
    summary = (tmp_path / "output" / "summary.md").read_bytes()
    assert b"\x00" not in summary
    assert b"stderr ends: bad\\x00byte" in summary


def test_a_stale_all_classification_is_removed(tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    (output / "all_classification.csv").write_text("AttackName,stale\n")
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (output / "all_classification.csv").exists()
    assert (output / "scores.json").exists()
