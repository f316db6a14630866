"""run_competition on toy submissions whose results are known in advance.

The toy dataset (competition_submissions/fixtures.py) has 8 uniform images whose
labels the toy defenses decode from the red value (bins of 32); with --epsilon=cycle
and batches of 2, batch k = {img2k, img2k+1} is attacked with epsilon 4, 8, 12, 16.
Hand-derived outcomes:
- noop copies: decode is right on all 8; half classifies the even images only;
- offset adds 16, clipped to epsilon: only img6 (epsilon 16, red 208 -> 224) leaves
  its bin; img7 saturates at 255 and stays in its own;
- broken writes the first image of each batch (img0, 2, 4, 6) and exits 1;
- target moves red toward its target's bin: only img6 (target 8, epsilon 16) gets
  there; every other image stays correct;
- crash (exit 3) and silent (exit 0) write nothing; messy adds a header, a
  malformed row per image and a row for an unknown image to decode's rows.
Every batch's pool holds 7 images (noop 2, offset 2, target 2, broken 1): parts of
2, 2, 2, 1, so 16 pieces per defense.
"""

import json
import math
import os
import re
from collections import Counter

import numpy as np
from PIL import Image

from tests.support.competition_submissions.fixtures import (
    calls,
    competition_args,
    link_toys,
    make_dataset,
    read_rows,
    run_script,
    toy_env,
)

DEFENSES = ["crash", "decode", "half", "messy", "silent"]


def snapshot(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def piece_times(root):
    return {
        str(path.relative_to(root)): path.stat().st_mtime_ns
        for path in sorted((root / "intermediate").rglob("piece.json"))
    }


def test_every_cell_and_score_of_a_toy_competition(tmp_path):
    dataset = make_dataset(tmp_path)
    # One folder for both kinds of attack: discovery picks each by its type.
    attacks = link_toys(tmp_path / "attacks", "noop", "offset", "broken", "target")
    defenses = link_toys(tmp_path / "defenses", *DEFENSES)
    (defenses / "bad").mkdir()
    (defenses / "bad" / "metadata.json").write_text('{"type": "defense",')
    (defenses / "notes").mkdir()  # no metadata.json: not a submission
    args = competition_args(
        tmp_path,
        dataset,
        attacks_dir=attacks,
        targeted_attacks_dir=attacks,
        defenses_dir=defenses,
    )
    result = run_script(
        *args,
        "--epsilon=cycle",
        "--batch_size=2",
        "--save_all_classification",
        env=toy_env(tmp_path),
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "output"
    assert f"problem(s), listed in {out}/summary.md" in result.stderr

    # The toolkit's files and layouts.
    assert (out / "accuracy_on_attacks.csv").read_text() == (
        ",crash,decode,half,messy,silent\nbroken,0,4,4,4,0\nnoop,0,8,4,8,0\noffset,0,7,3,7,0\n"
    )
    assert (out / "accuracy_on_targeted_attacks.csv").read_text() == (
        ",crash,decode,half,messy,silent\ntarget,0,7,3,7,0\n"
    )
    assert (out / "hit_target_class.csv").read_text() == (
        ",crash,decode,half,messy,silent\ntarget,0,1,1,1,0\n"
    )
    assert (out / "defense_ranking.csv").read_text() == (
        "DefenseName,Score\ndecode,26\nmessy,26\nhalf,14\ncrash,0\nsilent,0\n"
    )
    # 8 images x 5 defenses minus the row sums.
    assert (out / "attack_ranking.csv").read_text() == (
        "AttackName,Score\nbroken,28\noffset,23\nnoop,20\n"
    )
    assert (out / "targeted_attack_ranking.csv").read_text() == "AttackName,Score\ntarget,3\n"
    rows = read_rows(out / "all_classification.csv")
    assert rows[0] == [
        "AttackName",
        "IsTargeted",
        "DefenseName",
        "ImageId",
        "PredictedLabel",
        "TrueLabel",
        "TargetClass",
    ]
    # decode and messy classify all 28 adversarial images, half 16.
    assert len(rows) == 1 + 28 + 28 + 16
    assert ["target", "True", "decode", "img6", "8", "7", "8"] in rows
    assert ["offset", "False", "half", "img6", "8", "7", "8"] in rows
    assert ["broken", "False", "decode", "img2", "3", "3", "1"] in rows
    assert not [row for row in rows if row[2] == "half" and row[3] in ("img1", "img3")]

    report = json.loads((out / "scores.json").read_text())
    assert report["settings"]["epsilon"] == "cycle"
    assert [b["epsilon"] for b in report["settings"]["batches"]] == [4, 8, 12, 16]
    defenses_report = report["defenses"]
    assert sorted(defenses_report) == DEFENSES
    expected = {
        "crash": (0, 28, 0, 0, 0),
        "decode": (26, 0, 0, 0, 1),
        "half": (14, 12, 0, 0, 1),
        "messy": (26, 0, 16 + 28, 16, 1),
        "silent": (0, 28, 0, 0, 0),
    }
    for name, (points, unclassified, malformed, unknown, hits) in expected.items():
        entry = defenses_report[name]
        assert entry["score"] == points, name
        assert entry["adversarial_images"] == 28
        assert entry["normalised_score"] == points / 28, name
        assert entry["unclassified"] == unclassified, name
        assert entry["malformed_rows"] == malformed, name
        assert entry["unknown_rows"] == unknown, name
        assert entry["hit_target_class"] == hits, name
        assert len(entry["pieces"]) == 16
        assert [p["images"] for p in entry["pieces"][:4]] == [2, 2, 2, 1]
        assert entry["seconds"] == sum(p["seconds"] for p in entry["pieces"])
    assert defenses_report["decode"]["accuracy_on_attacks"] == {
        "broken": 1.0,
        "noop": 1.0,
        "offset": 7 / 8,
    }
    assert defenses_report["half"]["accuracy_on_attacks"] == {
        "broken": 1.0,
        "noop": 0.5,
        "offset": 3 / 8,
    }
    assert defenses_report["half"]["accuracy_on_targeted_attacks"] == {"target": 3 / 8}
    assert defenses_report["decode"]["correct_on_attacks"] == 19
    assert defenses_report["decode"]["correct_on_targeted_attacks"] == 7
    crash_pieces = defenses_report["crash"]["pieces"]
    assert {p["status"] for p in crash_pieces} == {"failed"}
    assert (
        crash_pieces[0]["reason"] == "exit status 3; stderr ends: crash: segmentation fault (toy)"
    )
    assert {p["status"] for p in defenses_report["silent"]["pieces"]} == {"ok"}

    attacks_report = report["attacks"]
    assert attacks_report["noop"] | {"pieces": None, "seconds": None} == {
        "score": 20,
        "images": 8,
        "missing": 0,
        "success_rate": 20 / 40,
        "mean_linf": 0.0,
        "mean_l2": 0.0,
        "pieces": None,
        "seconds": None,
    }
    offset = attacks_report["offset"]
    assert (offset["score"], offset["images"], offset["success_rate"]) == (23, 8, 23 / 40)
    assert offset["mean_linf"] == 10.0  # min(16, epsilon) over the batches
    # 16 pixels x 3 channels moved by min(16, epsilon); img7's red only by 15 (255).
    l2 = (2 * 4 + 2 * 8 + 2 * 12 + 16) * math.sqrt(48) + 4 * math.sqrt(15**2 + 2 * 16**2)
    assert math.isclose(offset["mean_l2"], l2 / 8, rel_tol=1e-12)
    broken = attacks_report["broken"]
    assert (broken["score"], broken["images"], broken["missing"]) == (28, 4, 4)
    assert broken["success_rate"] == 8 / 20
    assert [p["written"] for p in broken["pieces"]] == [1, 1, 1, 1]
    assert (
        broken["pieces"][0]["reason"] == "exit status 1; stderr ends: broken: out of memory (toy)"
    )
    target = report["targeted_attacks"]["target"]
    assert (target["score"], target["success_rate"]) == (3, 3 / 40)
    assert (target["mean_linf"], target["mean_l2"]) == (10.0, 40.0)  # red only: 4 x its move

    bad = str(defenses / "bad")
    assert list(report["skipped_submissions"]) == [bad]
    assert "metadata.json is not valid JSON" in report["skipped_submissions"][bad]
    problems = report["problems"]
    intermediate = tmp_path / "intermediate"
    # half leaves the odd images (green 192) unclassified: a problem per part holding one.
    sizes, odd = Counter(), Counter()
    for batch in range(4):
        pool = json.loads(
            (intermediate / f"all_adv_examples/batch_00{batch}/mapping.json").read_text()
        )
        for origin in pool.values():
            sizes[batch, origin["part"]] += 1
            odd[batch, origin["part"]] += int(origin["image_id"][-1]) % 2
    assert sorted(sizes.values()) == [1] * 4 + [2] * 12
    assert [p for p in problems if p.startswith("defense half ")] == [
        f"defense half batch_00{key[0]} part 0{key[1]}: no row for {count} of {sizes[key]} images"
        for key, count in sorted(odd.items())
        if count
    ]
    short_parts = [key for key, count in odd.items() if count]
    # broken's pieces, crash's, half's short parts, messy's and silent's.
    assert len(problems) == 4 + 16 + len(short_parts) + 16 + 16
    assert (
        "attack broken batch_000 (epsilon 4): exit status 1; stderr ends: broken: out of "
        "memory (toy); no image for 1 of 2: img1" in problems
    )
    assert "defense silent batch_003 part 03: wrote no result.csv" in problems
    assert (
        "defense messy batch_000 part 03: skipped 2 malformed row(s); 1 row(s) for images not "
        "in its input: unknown" in problems
    )

    summary = (out / "summary.md").read_text()
    assert "| decode | 26 | 0.929 | 1.000 | 1.000 | 0.875 | 0.875 | 0 | 0 |" in summary
    assert "| offset | no | 23 | 0.575 | 10.000 | 68.999 | 8 | 0 |" in summary
    assert f"- {bad}: skipped: metadata.json is not valid JSON" in summary
    assert "8 images in batches of 2; epsilon cycle; time limit 500 s per piece" in summary

    # Inputs: each piece had its own, removed once it ran; where it ran is in its record.
    assert not list(intermediate.glob("**/input")), list(intermediate.glob("**/input"))
    record = json.loads((intermediate / "attacks_output/noop/batch_002/piece.json").read_text())
    assert set(record["execution"]) == {"worker", "node", "seconds", "attempts"}
    assert record["execution"]["node"] == "local" and record["execution"]["attempts"] == 1

    # The pool: anonymous names mixing the attacks, each image clipped into its ball.
    pool = intermediate / "all_adv_examples" / "batch_001"
    mapping = json.loads((pool / "mapping.json").read_text())
    assert sorted(os.listdir(pool)) == ["mapping.json", "part_00", "part_01", "part_02", "part_03"]
    assert all(re.fullmatch(r"ADVBATCH001_IMG00000[0-6]\.png", name) for name in mapping)
    assert sorted((m["attack"], m["image_id"]) for m in mapping.values()) == [
        ("broken", "img2"),
        ("noop", "img2"),
        ("noop", "img3"),
        ("offset", "img2"),
        ("offset", "img3"),
        ("target", "img2"),
        ("target", "img3"),
    ]
    for name, origin in mapping.items():
        part = pool / f"part_{origin['part']:02d}"
        pixels = np.asarray(Image.open(part / name)).astype(int)
        clean = 32 * int(origin["image_id"][-1]) + 16
        red = {"noop": clean, "broken": clean, "offset": clean + 8}.get(origin["attack"])
        if origin["attack"] == "target":  # img2 toward 16, img3 toward 144: 8 at most
            red = {"img2": clean - 8, "img3": clean + 8}[origin["image_id"]]
        assert (pixels[..., 0] == red).all(), (name, origin)
    calls_before = calls(tmp_path)
    assert calls_before["noop batch_000"] == 1
    assert calls_before["target batch_000"] == 1
    assert sum(n for call, n in calls_before.items() if call.startswith("decode ")) == 16

    # A second run reuses every piece and writes the same files.
    before = snapshot(out)
    again = run_script(
        *args,
        "--epsilon=cycle",
        "--batch_size=2",
        "--save_all_classification",
        env=toy_env(tmp_path),
    )
    assert again.returncode == 1, again.stderr
    assert calls(tmp_path) == calls_before
    assert snapshot(out) == before


def test_resume_reruns_only_what_changed(tmp_path):
    dataset = make_dataset(tmp_path, count=4)
    attacks = link_toys(tmp_path / "attacks", "broken", "noop")
    defenses = link_toys(tmp_path / "defenses", "crash", "decode")
    args = [
        *competition_args(tmp_path, dataset, attacks_dir=attacks, defenses_dir=defenses),
        "--batch_size=2",
    ]
    env = toy_env(tmp_path)
    first = run_script(*args, "--epsilon=cycle", env=env)
    assert first.returncode == 1, first.stderr
    assert read_rows(tmp_path / "output" / "accuracy_on_attacks.csv") == [
        ["", "crash", "decode"],
        ["broken", "0", "2"],
        ["noop", "0", "4"],
    ]
    counted, times = calls(tmp_path), piece_times(tmp_path)
    assert len(times) == 4 + 2 * 2 * 2  # 2 attacks x 2 batches; pools of 3: 2 parts each

    # --retry_failed reruns the failed pieces (broken's, crash's) and nothing else.
    retry = run_script(*args, "--epsilon=cycle", "--retry_failed", env=env)
    assert retry.returncode == 1, retry.stderr
    rerun = {name for name, mtime in piece_times(tmp_path).items() if mtime != times[name]}
    assert rerun == {name for name in times if "/broken/" in name or "/crash/" in name}
    assert calls(tmp_path) - counted == {
        "broken batch_000": 1,
        "broken batch_001": 1,
    }

    # --epsilon=8: batch 0 (was 4) is attacked again, batch 1 (was 8) is not. Its
    # clipped copies are the same images, so no defense piece runs again.
    counted, times = calls(tmp_path), piece_times(tmp_path)
    fixed = run_script(*args, "--epsilon=8", env=env)
    assert fixed.returncode == 1, fixed.stderr
    assert calls(tmp_path) - counted == {"broken batch_000": 1, "noop batch_000": 1}
    rerun = {name for name, mtime in piece_times(tmp_path).items() if mtime != times[name]}
    assert rerun == {
        "intermediate/attacks_output/broken/batch_000/piece.json",
        "intermediate/attacks_output/noop/batch_000/piece.json",
    }
    assert json.loads((tmp_path / "output" / "scores.json").read_text())["settings"]["epsilon"] == 8

    # A defense's changed input image (here: tampered with) is restored before it runs.
    part = tmp_path / "intermediate" / "all_adv_examples" / "batch_000" / "part_00"
    victim = sorted(part.iterdir())[0]
    victim.chmod(0o644)
    victim.write_bytes(b"tampered")
    run_script(*args, "--epsilon=8", env=env)
    assert victim.read_bytes().startswith(b"\x89PNG")
