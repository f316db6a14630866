"""The adaptive rows computed on the trained digits CNN by a run's own path (plan, the
results file, compute_pending, render): APGD-EOT beside EOT-PGD on Table 2's randomized
defense at the same budget (epsilon, iterations, EOT samples), plain APGD on Table 5's
fixed one, resumed without recomputing and refused with other settings.
"""

import numpy as np
import pytest
from PIL import Image

from attacks.paper.cells import ResultsFile, SettingsMismatch, pending
from attacks.paper.data import read_image_set
from attacks.paper.models import ModelEntry
from attacks.paper.run import ImageSets, RunOptions, compute_pending, plan, render
from attacks.paper.tables import ADAPTIVE, ADAPTIVE_APGD, ADAPTIVE_ROWS
from tests.support.digits import DEFENSE, INPUT_SIZE, NUM_CLASSES, OUT_SIZE

IMAGES, EPSILON, ITERATIONS, SAMPLES = 16, 16.0, 8, 2
# The same budget for both rows: epsilon, iterations and patterns per EOT gradient.
OVERRIDES = {
    ADAPTIVE: {"epsilon": EPSILON, "steps": ITERATIONS, "samples": SAMPLES},
    ADAPTIVE_APGD: {"epsilon": EPSILON, "n_iter": ITERATIONS, "samples": SAMPLES},
}


@pytest.fixture
def run(digits, digits_correct, tmp_path):
    """The digits CNN's model set and its first correctly classified test images as a
    dataset: (models, image sets)."""
    images, labels = (a[:IMAGES] for a in digits_correct)
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    folder = tmp_path / "dataset"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"digit{i:02d}.png")
    lines = "".join(f"digit{i:02d}.png,{label}\n" for i, label in enumerate(labels))
    (folder / "labels.csv").write_text(lines)
    dataset = read_image_set(
        folder, folder / "labels.csv", first_label=0, num_classes=NUM_CLASSES, size=INPUT_SIZE
    )
    entry = ModelEntry(
        name="digits",
        load=lambda: digits.model,
        weights="trained",
        input_size=INPUT_SIZE,
        out_size=OUT_SIZE,
        config=DEFENSE.replace(num_iterations=1),
        class_names=[str(digit) for digit in range(NUM_CLASSES)],
    )
    return {"digits": entry}, ImageSets(dataset, dataset)


def options(table, rows, overrides=OVERRIDES):
    return RunOptions(tables=[table], rows=rows, runs=1, seed=0, overrides=overrides)


# Both adaptive rows on Table 2's randomized defense; plain APGD on Table 5's fixed one.
RUNS = ((2, ADAPTIVE_ROWS), (5, (ADAPTIVE_APGD,)))


def test_apgd_eot_is_at_least_as_strong_as_eot_pgd_and_resumes(run, tmp_path):
    """Measured: defense accuracy 0.5 under EOT-PGD and 0.25 under APGD-EOT of 16 images;
    in 8 steps EOT-PGD's epsilon / 8 steps barely cross the ball, APGD's 2 * epsilon do.
    Plain APGD on Table 5's fixed defense: 0.19 (PGD there: 0.5)."""
    models, sets = run
    results = ResultsFile(tmp_path / "results.jsonl")
    cells = [cell for table, rows in RUNS for cell in plan(models, sets, options(table, rows))]
    results.check(cells)
    assert compute_pending(cells, results, models, sets, options(*RUNS[0])) == 3
    measured = {(cell.table, cell.row): results.result(cell) for cell in cells}
    for (table, row), record in measured.items():
        assert record is not None
        print(
            f"table {table} {row}: target {record['target']:.3f}, defense {record['defense']:.3f}"
        )
        assert 0 < record["linf"] <= EPSILON + 1e-3
    eot_pgd, apgd = measured[2, ADAPTIVE], measured[2, ADAPTIVE_APGD]
    assert apgd["defense"] <= eot_pgd["defense"] + 1 / IMAGES  # one image of slack
    assert apgd["defense"] <= 0.5 and measured[5, ADAPTIVE_APGD]["defense"] <= 0.5

    labels = [
        label
        for table, rows in RUNS
        for rendered in render(cells, results, models, options(table, rows))
        for _, label in rendered.rows
    ]
    assert labels == [
        "EOT-PGD-16 (adaptive)",
        "APGD-EOT-16 (adaptive)",
        "APGD-16 on the defense (adaptive)",
    ]

    # A rerun finds every cell done; other APGD settings are refused, naming them.
    again = ResultsFile(results.path)
    again.check(cells)
    assert pending(cells, again) == []
    other = {**OVERRIDES, ADAPTIVE_APGD: {**OVERRIDES[ADAPTIVE_APGD], "n_iter": 9}}
    with pytest.raises(SettingsMismatch, match=r"params\.n_iter: 8 in the file, 9 now"):
        again.check(plan(models, sets, options(2, ADAPTIVE_ROWS, other)))


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_the_cells_on_ray_are_the_local_cells(run, tmp_path):
    """The same cells computed as Ray tasks (a local instance of 2 CPUs) are the same
    lines of the results file, but for when and where they ran."""
    from attacks.execution.executor import RayExecutor

    models, sets = run
    cells = [cell for table, rows in RUNS for cell in plan(models, sets, options(table, rows))]
    found = {}
    for name in ("local", "ray"):
        results = ResultsFile(tmp_path / f"{name}.jsonl")
        executor = RayExecutor(num_cpus=2) if name == "ray" else None
        try:
            compute_pending(cells, results, models, sets, options(*RUNS[0]), executor=executor)
        finally:
            if executor is not None:
                executor.close()
        found[name] = {
            str(cell.key): {
                field: value
                for field, value in results.result(cell).items()
                if field not in ("finished", "seconds", "ran")
            }
            for cell in cells
        }
        ran = [results.result(cell)["ran"] for cell in cells]
        assert all(record["attempts"] == 1 for record in ran)
        assert all((record["node"] == "local") == (name == "local") for record in ran)
    assert found["ray"] == found["local"]
