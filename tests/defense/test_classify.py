"""The directory runner: every good image classified, every bad one reported, work kept."""

import numpy as np
import pytest
from PIL import Image

from defense.classify import classify_directory


def brightness_label(images: np.ndarray) -> np.ndarray:
    """A stand-in classifier: label from the mean brightness, so the CSV can be checked."""
    return np.rint((images.mean(axis=(1, 2, 3)) + 1) * 500).astype(int)


@pytest.fixture
def input_dir(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, level in enumerate([0, 51, 255, 102, 204]):
        Image.fromarray(np.full((299, 299, 3), level, np.uint8)).save(folder / f"img{i}.png")
    return folder


def read_rows(path):
    return [line.split(",") for line in path.read_text().splitlines()]


def test_labels_for_every_image_sorted_by_name(input_dir, tmp_path):
    out = tmp_path / "out.csv"
    result = classify_directory(input_dir, out, brightness_label, batch_size=2, progress=False)
    assert result.failures == {}
    assert read_rows(out) == [
        ["img0.png", "0"],
        ["img1.png", "200"],
        ["img2.png", "1000"],
        ["img3.png", "400"],
        ["img4.png", "800"],
    ]


def test_bad_files_are_listed_and_good_ones_classified(input_dir, tmp_path):
    (input_dir / "empty.png").write_bytes(b"")
    (input_dir / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    (input_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(10))
    (input_dir / "target_class.csv").write_text("img0.png,3\n")
    out = tmp_path / "out.csv"
    result = classify_directory(input_dir, out, brightness_label, batch_size=3, progress=False)
    assert sorted(result.failures) == ["broken.png", "empty.png", "photo.jpg"]
    assert "JPEG" in result.failures["photo.jpg"]
    assert [row[0] for row in read_rows(out)] == [f"img{i}.png" for i in range(5)]


def test_class_name_column(input_dir, tmp_path):
    out = tmp_path / "out.csv"
    names = [f"class {i}" for i in range(1001)]
    classify_directory(input_dir, out, brightness_label, class_names=names, progress=False)
    assert read_rows(out)[1] == ["img1.png", "200", "class 200"]


def test_interrupted_run_keeps_finished_batches(input_dir, tmp_path):
    out = tmp_path / "out.csv"
    calls = []

    def dies_on_third_batch(images):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return brightness_label(images)

    with pytest.raises(KeyboardInterrupt):
        classify_directory(input_dir, out, dies_on_third_batch, batch_size=2, progress=False)
    assert [row[0] for row in read_rows(out)] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in", "out.csv"]


def test_all_images_bad_still_writes_an_empty_csv(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"nope")
    out = tmp_path / "out.csv"
    result = classify_directory(folder, out, brightness_label, progress=False)
    assert list(result.failures) == ["a.png"] and out.read_text() == ""


def test_all_images_bad_keeps_an_earlier_csv(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"nope")
    out = tmp_path / "out.csv"
    out.write_text("a.png,7\n")
    result = classify_directory(folder, out, brightness_label, progress=False)
    assert list(result.failures) == ["a.png"] and out.read_text() == "a.png,7\n"


def test_no_progress_bar_when_stderr_is_not_a_terminal(input_dir, tmp_path, capsys):
    classify_directory(input_dir, tmp_path / "out.csv", brightness_label, progress=True)
    assert "classifying" not in capsys.readouterr().err
