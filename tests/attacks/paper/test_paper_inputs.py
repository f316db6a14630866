"""reproduce_paper's inputs, checked before any cell runs: every dataset image decoded at
the models' input size (another size and a damaged PNG refused, grayscale noted), the
results file refused unless a regular file, and seeds and overrides the models cannot
take refused, naming the override key (ROW.PARAM) rather than an attack's parameter;
and the resolved settings a planned cell records (the adaptive rows').

The FIFO and /dev/zero cases, which hung rather than failed, run in a subprocess in
tests/system/test_reproduce_paper.py.
"""

import logging
import os
from typing import Any

import numpy as np
import pytest
from PIL import Image

from attacks.catalog import get_attack
from attacks.paper.cells import ResultsFile
from attacks.paper.data import read_image_set
from attacks.paper.models import ModelEntry
from attacks.paper.run import ImageSets, RunOptions, plan
from attacks.paper.tables import ADAPTIVE, ADAPTIVE_APGD, ADAPTIVE_ROWS, EOT_CHUNK_SIZE
from defense.common.errors import InputError, ParameterError
from tests.support.digits import DEFENSE, INPUT_SIZE, NUM_CLASSES, OUT_SIZE


def write_dataset(folder, images):
    """PNGs digit00.png, ... of `images` (PIL images) with labels 0, 1, ..."""
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"digit{i:02d}.png")
    labels = folder / "labels.csv"
    labels.write_text("".join(f"digit{i:02d}.png,{i}\n" for i in range(len(images))))
    return folder, labels


def rgb(width=INPUT_SIZE, height=INPUT_SIZE):
    return Image.fromarray(np.full((height, width, 3), 128, np.uint8))


def read(folder, labels):
    return read_image_set(folder, labels, first_label=0, num_classes=NUM_CLASSES, size=INPUT_SIZE)


def test_an_image_of_another_size_is_refused_naming_it(tmp_path):
    folder, labels = write_dataset(tmp_path / "data", [rgb(), rgb(64, 48)])
    with pytest.raises(InputError, match=r"digit01\.png: is 64x48, not 32x32"):
        read(folder, labels)


def test_a_truncated_png_is_refused_before_any_cell(tmp_path):
    folder, labels = write_dataset(tmp_path / "data", [rgb(), rgb()])
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(folder / "digit01.png")
    data = (folder / "digit01.png").read_bytes()
    (folder / "digit01.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"digit01\.png: corrupt PNG"):
        read(folder, labels)


def test_a_grayscale_image_is_converted_with_a_warning(tmp_path, caplog):
    gray = Image.fromarray(np.full((INPUT_SIZE, INPUT_SIZE), 7, np.uint8))
    folder, labels = write_dataset(tmp_path / "data", [rgb(), gray])
    with caplog.at_level(logging.WARNING):
        images = read(folder, labels)
    assert images.names == ["digit00.png", "digit01.png"]
    assert images.pixels(1, 2, INPUT_SIZE).shape == (1, INPUT_SIZE, INPUT_SIZE, 3)
    assert "digit01.png (converted L to RGB)" in caplog.text


def test_a_results_file_linked_to_a_device_is_refused_at_once(tmp_path):
    path = tmp_path / "results.jsonl"
    os.symlink("/dev/null", path)
    with pytest.raises(InputError, match="is a character device, not a regular file"):
        ResultsFile(path)


@pytest.mark.parametrize("name", ["seed", "subset_seed"])
def test_a_negative_seed_is_refused(name):
    seeds: dict[str, Any] = {name: -1}
    with pytest.raises(ParameterError, match=f"{name} must be in 0..") as caught:
        RunOptions(tables=[2], **seeds)
    assert caught.value.parameters == (name,)


def digits_entry():
    return ModelEntry(
        name="digits",
        load=lambda: None,
        weights="none",
        input_size=INPUT_SIZE,
        out_size=OUT_SIZE,
        config=DEFENSE,
        class_names=[str(digit) for digit in range(NUM_CLASSES)],
    )


def planned(tmp_path, rows, overrides, tables=(2,)):
    folder, labels = write_dataset(tmp_path / "data", [rgb()])
    images = read(folder, labels)
    options = RunOptions(tables=tables, rows=rows, overrides=overrides)
    return plan({"digits": digits_entry()}, ImageSets(images, images), options)


def test_the_apgd_eot_cells_record_apgds_resolved_settings(tmp_path):
    """Beside EOT-PGD's cell in every attack table, with its epsilon and samples and
    APGD's own defaults; the defense's chunks too where it is randomized (Table 2)."""
    cells = planned(tmp_path, list(ADAPTIVE_ROWS), {}, tables=(2, 5))
    assert [(cell.table, cell.row) for cell in cells] == [
        (2, ADAPTIVE),
        (2, ADAPTIVE_APGD),
        (5, ADAPTIVE),
        (5, ADAPTIVE_APGD),
    ]
    eot, apgd, pgd, plain = (cell.settings for cell in cells)
    assert (eot["attack"], apgd["attack"], pgd["attack"], plain["attack"]) == (
        "eot_pgd",
        "apgd",
        "pgd",
        "apgd",
    )
    expected = {**get_attack("apgd").defaults, "epsilon": 8.0, "samples": eot["params"]["samples"]}
    assert apgd["params"] == plain["params"] == expected
    assert apgd["params"]["samples"] == 30 and apgd["params"]["n_iter"] == 100
    assert apgd["chunk_size"] == eot["chunk_size"] == EOT_CHUNK_SIZE
    assert "chunk_size" not in plain and "chunk_size" not in pgd
    assert (apgd["runs"], plain["runs"]) == (3, 1)


def test_more_deepfool_candidates_than_classes_are_refused_before_any_cell(tmp_path):
    with pytest.raises(ParameterError) as caught:
        planned(tmp_path, ["deepfool"], {"deepfool": {"nb_candidate": 50}})
    assert str(caught.value) == (
        "deepfool.nb_candidate must be at most the 10 classes of model 'digits', got 50"
    )
    assert caught.value.parameters == ("deepfool.nb_candidate",)


def test_a_bad_override_is_named_by_its_override_key(tmp_path):
    with pytest.raises(ParameterError) as caught:
        planned(tmp_path, ["fgsm-2"], {"fgsm-2": {"epsilon": -1.0}})
    assert str(caught.value).startswith("fgsm-2.epsilon must be in (0, 255]")
    assert caught.value.parameters == ("fgsm-2.epsilon",)
