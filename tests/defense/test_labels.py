"""The slim 1001-class name table: size, order, known entries, and the format check."""

import re
from pathlib import Path

import pytest

from defense import labels

DATA_FILE = Path(__file__).resolve().parents[2] / "defense" / "data" / "slim_class_names.txt"

# Well-known Keras/torchvision (0..999) indices; slim labels are one higher.
KERAS_INDEX = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    281: ("n02123045", "tabby"),
    409: ("n02708093", "analog clock"),
    812: ("n04266014", "space shuttle"),
    967: ("n07920052", "espresso"),
    999: ("n15075141", "toilet tissue"),
}


def test_table_has_background_and_1000_classes():
    names, ids = labels.class_names(), labels.wnids()
    assert len(names) == len(ids) == labels.NUM_CLASSES == 1001
    assert (ids[0], names[0]) == (labels.BACKGROUND_WNID, "background")


def test_first_and_last_class():
    names, ids = labels.class_names(), labels.wnids()
    assert (ids[1], names[1]) == ("n01440764", "tench, Tinca tinca")
    assert (ids[1000], names[1000]) == (
        "n15075141",
        "toilet tissue, toilet paper, bathroom tissue",
    )


def test_classes_are_unique_wnids_in_sorted_order():
    ids = labels.wnids()[1:]
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in ids)
    assert ids == sorted(set(ids))


@pytest.mark.parametrize(("keras_index", "expected"), KERAS_INDEX.items())
def test_slim_label_is_keras_index_plus_one(keras_index, expected):
    wnid, first_lemma = expected
    slim = keras_index + 1
    assert labels.wnids()[slim] == wnid
    assert labels.class_names()[slim].split(", ")[0] == first_lemma


def test_results_are_fresh_lists():
    names = labels.class_names()
    names[1] = "changed"
    assert labels.class_names()[1] == "tench, Tinca tinca"


def test_data_file_is_clean_text():
    raw = DATA_FILE.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode("ascii").splitlines()
    assert len(lines) == 1001
    assert all(line == line.strip() and line.count("\t") == 1 for line in lines)


def test_parse_table_rejects_wrong_count_and_malformed_lines():
    good = DATA_FILE.read_text(encoding="utf-8")
    assert len(labels.parse_table(good)) == 1001
    with pytest.raises(ValueError, match="1000 entries, expected 1001"):
        labels.parse_table(good.split("\n", 1)[1])
    with pytest.raises(ValueError, match="line 2"):
        labels.parse_table(good.replace("n01440764\t", "n01440764 ", 1))
