"""Label files: the `<filename>,<label>` CSV and the NIPS 2017 dataset CSV (attacks.data)."""

import pytest

from attacks.data.dataset import LabelError, labels_for, read_labels, read_targets


def test_plain_label_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffa.png,1\n\nb.png, 1000 ,extra column\n", encoding="utf-8")
    assert read_labels(path) == {"a.png": 1, "b.png": 1000}
    assert read_targets(path) == {"a.png": 1, "b.png": 1000}


def test_nips_dataset_csv(tmp_path):
    path = tmp_path / "dev_dataset.csv"
    path.write_text(
        "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,"
        "AuthorProfileURL\n"
        "0c7ac4a8c9dfa802,https://x/a.jpg,0.1,0.2,0.9,0.8,306,110,u,l,a,p\n"
        "e2cf1b7a1b6a2b62,https://x/b.jpg,0,0,1,1,1,1000,u,l,a,p\n"
    )
    assert read_labels(path) == {"0c7ac4a8c9dfa802.png": 306, "e2cf1b7a1b6a2b62.png": 1}
    assert read_targets(path) == {"0c7ac4a8c9dfa802.png": 110, "e2cf1b7a1b6a2b62.png": 1000}
    path.write_text("ImageId,TrueLabel\nabc,5\n")
    with pytest.raises(LabelError, match="no TargetClass column"):
        read_targets(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,0\n", r"line 1: label 0 of a.png is outside 1\.\.1000"),
        ("a.png,5\nb.png,1001\n", r"line 2: label 1001 of b.png is outside 1\.\.1000"),
        ("a.png,cat\n", "line 1: label 'cat' of a.png is not an integer"),
        ("filename,label\na.png,3\n", "line 1: label 'label' of filename"),
        ("a.png\n", "line 1: expected <filename>,<label>"),
        ("a.png,3\na.png,4\n", "line 2: a.png has label 4 here and 3 on line 1"),
    ],
)
def test_bad_label_lines_are_named(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelError, match=message):
        read_labels(path)


def test_every_bad_line_is_reported_at_once(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a.png,0\nb.png,x\nc.png,3\n")
    with pytest.raises(LabelError, match=r"line 1: .*line 2: "):
        read_labels(path)


def test_number_of_classes_is_configurable(tmp_path):
    path = tmp_path / "digits.csv"
    path.write_text("a.png,0\nb.png,9\n")
    assert read_labels(path, num_classes=10, first_label=0) == {"a.png": 0, "b.png": 9}
    with pytest.raises(LabelError, match=r"outside 1\.\.10"):
        read_labels(path, num_classes=10)


def test_missing_labels_name_the_images(tmp_path):
    assert labels_for(["b.png"], {"a.png": 1, "b.png": 2}, source="x.csv") == {"b.png": 2}
    with pytest.raises(LabelError, match=r"x\.csv has no label for 2 image\(s\): c\.png, d\.png"):
        labels_for(["a.png", "c.png", "d.png"], {"a.png": 1}, source="x.csv")
    with pytest.raises(LabelError, match="cannot read label file"):
        read_labels(tmp_path / "absent.csv")
