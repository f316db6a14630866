"""End to end: run_competition with this project's own submissions, the FGSM attack
(submissions/fgsm) and the defense at the repository root, on generated 299x299 PNGs
with the generated Inception-ResNet-v2 checkpoint, natively. Both are linked into
the competition folders, as a user would link them."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.competition_submissions.fixtures import (
    REPO,
    read_rows,
    run_script,
    write_metadata,
)

pytestmark = pytest.mark.slow


def smooth_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((299, 299), Image.Resampling.BICUBIC))


def test_own_fgsm_and_defense(irv2_checkpoint, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    ids = ["0c7ac4a8c9dfa802", "6f2a4b1e9d3c5a70"]
    for seed, image_id in enumerate(ids):
        Image.fromarray(smooth_image(seed)).save(dataset / f"{image_id}.png")
    metadata = write_metadata(tmp_path / "dev_dataset.csv", [(ids[0], 3, 500), (ids[1], 1000, 7)])
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "fgsm").symlink_to(REPO / "submissions" / "fgsm")
    (tmp_path / "defenses").mkdir()
    (tmp_path / "defenses" / "randomization").symlink_to(REPO)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "ATTACK_CHECKPOINT": str(irv2_checkpoint),
        "ATTACK_FLAGS": "--noprogress",
        "DEFENSE_CHECKPOINT": str(irv2_checkpoint),
    }
    out = tmp_path / "output"
    result = run_script(
        f"--attacks_dir={tmp_path / 'attacks'}",
        f"--defenses_dir={tmp_path / 'defenses'}",
        f"--dataset_dir={dataset}",
        f"--dataset_metadata={metadata}",
        f"--intermediate_results_dir={tmp_path / 'intermediate'}",
        f"--output_dir={out}",
        "--epsilon=cycle",
        "--batch_size=2",
        "--time_limit=0",
        "--save_all_classification",
        env=env,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr
    matrix = read_rows(out / "accuracy_on_attacks.csv")
    assert [matrix[0], matrix[1][0]] == [["", "randomization"], "fgsm"]
    correct = int(matrix[1][1])
    rows = read_rows(out / "all_classification.csv")[1:]
    assert sorted(row[3] for row in rows) == ids
    assert all(row[:3] == ["fgsm", "False", "randomization"] for row in rows)
    assert all(0 <= int(row[4]) <= 1000 for row in rows)
    assert correct == sum(row[4] == row[5] for row in rows)
    assert read_rows(out / "defense_ranking.csv") == [
        ["DefenseName", "Score"],
        ["randomization", str(correct)],
    ]
    assert read_rows(out / "attack_ranking.csv") == [
        ["AttackName", "Score"],
        ["fgsm", str(2 - correct)],
    ]
    report = json.loads((out / "scores.json").read_text())
    defense = report["defenses"]["randomization"]
    assert (defense["unclassified"], defense["normalised_score"]) == (0, correct / 2)
    assert [piece["status"] for piece in defense["pieces"]] == ["ok"]
    fgsm = report["attacks"]["fgsm"]
    assert (fgsm["images"], fgsm["missing"]) == (2, 0)
    # Batch 0 of the cycle has epsilon 4; FGSM moves every pixel by it (or to a bound).
    assert 0 < fgsm["mean_linf"] <= 4
    clipped = tmp_path / "intermediate" / "attacks_output" / "fgsm" / "batch_000" / "clipped"
    for image_id in ids:
        clean = np.asarray(Image.open(dataset / f"{image_id}.png")).astype(int)
        adversarial = np.asarray(Image.open(clipped / f"{image_id}.png")).astype(int)
        assert np.abs(adversarial - clean).max() <= 4
    assert "## Problems\n\nNone." in (out / "summary.md").read_text()
