"""The on-disk adversarial set (attacks.evaluation.adversarial_set): atomic outputs, the run record
(stats.csv and settings.json), float copies, and reading a set back to judge it."""

import json

import numpy as np
import pytest

from attacks.evaluation import adversarial_set
from attacks.evaluation.adversarial_set import (
    STATS_COLUMNS,
    RunRecord,
    read_adversarial_set,
    read_float,
    read_settings,
    write_npy_atomic,
    write_png_atomic,
)
from attacks.evaluation.settings import make_settings
from defense.common.errors import InputError
from defense.common.files import write_atomic
from defense.common.images import to_model_input
from tests.support.adversarial_helpers import (
    NAMES,
    read_png,
    read_stats,
    smooth_image,
    stand_in_set,
)

# ---------------------------------------------------------------- atomic writers


def test_png_and_npy_round_trip(tmp_path):
    pixels = smooth_image(1)
    write_png_atomic(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), pixels)
    values = np.random.default_rng(0).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    write_npy_atomic(tmp_path / "a.npy", values)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), values)
    with pytest.raises(ValueError, match="uint8"):
        write_png_atomic(tmp_path / "b.png", values)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"old")

    def half_then_fail(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_float_copies_are_read_back_and_checked(tmp_path):
    values = np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)
    write_npy_atomic(tmp_path / "a.npy", values.astype(np.float64))
    read = read_float(tmp_path / "a.npy", 8)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, values)
    with pytest.raises(InputError, match=r"a\.npy is 8x8, not 4x4"):
        read_float(tmp_path / "a.npy", 4)
    write_npy_atomic(tmp_path / "flat.npy", values[..., 0])
    with pytest.raises(InputError, match=r"shape \(8, 8\), not \[H, W, 3\]"):
        read_float(tmp_path / "flat.npy", 8)
    with pytest.raises(InputError, match=r"cannot read .*--save_float"):
        read_float(tmp_path / "absent.npy", 8)


# ---------------------------------------------------------------- the run record


def row(name: str, **values) -> dict[str, object]:
    """A stats row of image `name`: zeros but for `values`."""
    return {"image": name, **dict.fromkeys(STATS_COLUMNS[1:], 0), "target": "", **values}


def test_the_record_writes_settings_then_sorted_rows(tmp_path):
    settings = make_settings("fgsm", max_epsilon=4)
    record = RunRecord(tmp_path, settings)
    assert record.rows == {} and read_settings(tmp_path) == {}
    record.add([row("b.png", label=3), row("a.png", label=7)])
    assert read_settings(tmp_path) == record.settings
    assert record.settings["attack"] == "fgsm" and record.settings["params"] == {"epsilon": 4}
    assert list(read_stats(tmp_path)) == ["a.png", "b.png"]
    record.add([row("a.png", label=8)])  # a row is replaced, not added
    assert [r["label"] for r in read_stats(tmp_path).values()] == ["8", "3"]
    assert RunRecord(tmp_path, settings).rows == read_stats(tmp_path)
    record.write_settings({"note": "test"})
    written = json.loads((tmp_path / "settings.json").read_text())
    assert written == {"settings": record.settings, "note": "test"}
    assert record.is_done("a.png", save_float=False) is False  # no PNG yet
    write_png_atomic(record.png_path("a.png"), smooth_image(0, 4))
    assert record.is_done("a.png", save_float=False)
    assert not record.is_done("a.png", save_float=True)  # no float copy yet
    assert not record.is_done("c.png", save_float=False)  # no row


def test_another_runs_output_is_refused(tmp_path):
    settings = make_settings("pgd", {"steps": 1}, targeted=True, max_epsilon=4)
    record = RunRecord(tmp_path, settings)
    record.write_settings({"note": "test"})
    record.add([row("img_0.png", target=2)])
    RunRecord(tmp_path, settings)  # the same run resumes
    with pytest.raises(
        ValueError, match=r"holds the output of another run \(steps=1 there, 2 now\)"
    ):
        RunRecord(tmp_path, make_settings("pgd", {"steps": 2}, targeted=True, max_epsilon=4))
    (tmp_path / "settings.json").unlink()
    with pytest.raises(ValueError, match=r"exists without settings\.json.*another output_dir"):
        RunRecord(tmp_path, settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "cannot read"),
        ('{"notes": 1}', "cannot read"),
        ('{"settings": [1]}', "its settings are not an object"),
    ],
)
def test_unreadable_settings_are_reported(tmp_path, text, message):
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(InputError, match=message):
        read_settings(tmp_path)


def test_a_stats_file_needs_the_stats_columns(tmp_path):
    (tmp_path / "stats.csv").write_text("image,label\na.png,1\n")
    with pytest.raises(InputError, match="does not have the columns of a stats file"):
        adversarial_set.read_stats(tmp_path / "stats.csv")
    with pytest.raises(InputError, match="does not have the columns"):
        RunRecord(tmp_path, make_settings("fgsm"))


# ---------------------------------------------------------------- reading a set back


@pytest.fixture
def judged_set(tmp_path):
    """An output directory of a stand-in fgsm run on two images, without float copies."""
    return stand_in_set(tmp_path)


def test_adversarial_set_reads_pngs_and_labels(judged_set):
    adversarial = read_adversarial_set(judged_set, "png")
    rows = read_stats(judged_set)
    assert adversarial.names == NAMES[:2]
    assert adversarial.labels.tolist() == [int(rows[name]["label"]) for name in NAMES[:2]]
    (images, labels), *rest = adversarial.batches(8, 299)
    assert not rest and images.shape == (2, 299, 299, 3)
    assert labels.tolist() == adversarial.labels.tolist()
    np.testing.assert_array_equal(images[1], to_model_input(read_png(judged_set / NAMES[1])))
    relabelled = read_adversarial_set(judged_set, "png", labels={NAMES[0]: 7, NAMES[1]: 9})
    assert relabelled.labels.tolist() == [7, 9]


@pytest.mark.parametrize(
    ("source", "labels", "message"),
    [
        ("float", None, r"2 image\(s\) have no float copy .*--save_float"),
        ("png", {NAMES[0]: 5}, r"no label for img_1\.png"),
        ("jpeg", None, "unknown source 'jpeg'"),
    ],
)
def test_adversarial_set_refuses_what_it_cannot_judge(judged_set, source, labels, message):
    with pytest.raises((InputError, ValueError), match=message):
        read_adversarial_set(judged_set, source, labels=labels)


def test_adversarial_set_needs_a_stats_file(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*stats\.csv"):
        read_adversarial_set(tmp_path, "png")
