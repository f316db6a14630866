"""make_dataset: crops of generated originals from a generated dataset CSV (the library and
the command in subprocesses), the paper's selection on a stub classifier, and bad input."""

import csv
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attacks.data.builder import (
    DatasetError,
    crop_and_resize,
    crop_box,
    make_dataset,
    read_dataset_csv,
    sample,
    select_correct,
)
from defense.common.errors import ParameterError

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,"
    "AuthorProfileURL"
)
# Per image: its size, the relative box, and the colour inside it (outside is black).
IMAGES = {
    "a1": ((400, 300), (0.25, 0.1, 0.75, 0.9), (200, 30, 30)),
    "b2": ((321, 479), (0.0, 0.5, 1.0, 1.0), (30, 200, 30)),
    "c3": ((640, 480), (0.1, 0.2, 0.3, 0.4), (30, 30, 200)),
    "d4": ((299, 299), (0.0, 0.0, 1.0, 1.0), (120, 120, 10)),
}


def original(size, box, colour):
    """A black image with `colour` exactly in the box's pixels (as the toolkit computes them)."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    left, top, right, bottom = crop_box(width, height, box)
    pixels[top:bottom, left:right] = colour
    return Image.fromarray(pixels)


def csv_line(image_id, box, label=1, target=2, url=None):
    url = url or f"http://127.0.0.1:9/{image_id}.jpg"
    return f"{image_id},{url},{','.join(map(str, box))},{label},{target},land,CC BY,me,prof"


@pytest.fixture
def originals(tmp_path):
    """Originals a1, c3 as JPEG and b2, d4 as PNG, and the dataset CSV of all four."""
    folder = tmp_path / "originals"
    folder.mkdir()
    for n, (image_id, (size, box, colour)) in enumerate(IMAGES.items()):
        suffix = ".jpg" if n % 2 == 0 else ".png"
        original(size, box, colour).save(folder / f"{image_id}{suffix}", quality=95)
    dataset_csv = tmp_path / "dev_dataset.csv"
    lines = [
        csv_line(i, box, label=10 * (n + 1)) for n, (i, (_, box, _)) in enumerate(IMAGES.items())
    ]
    dataset_csv.write_text("\n".join([HEADER, *lines]) + "\n")
    return folder, dataset_csv


def make(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_dataset.py"), "--noprogress", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_crop_box_is_the_toolkits_truncated_pixel_box():
    assert crop_box(1000, 500, (0.1, 0.2, 0.5, 0.9)) == (100, 100, 500, 450)
    assert crop_box(10, 10, (0.33, 0.0, 0.66, 1.0)) == (3, 0, 6, 10)  # int() truncates
    assert crop_box(10, 10, (0.5, 0.5, 0.51, 0.52)) == (5, 5, 6, 6)  # widened to one pixel
    assert crop_box(10, 10, (0.0, 0.0, 1.0, 1.0)) == (0, 0, 10, 10)


def test_crop_and_resize_keeps_exactly_the_box():
    size, box, colour = IMAGES["a1"]
    pixels = crop_and_resize(original(size, box, colour), box)
    assert pixels.shape == (299, 299, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - colour).max() <= 1
    # Grey-scale and palette originals come out RGB; the filter blurs only near an edge.
    image = Image.new("L", (100, 100), 255)
    image.paste(0, (50, 0, 100, 100))
    split = crop_and_resize(image, (0.0, 0.0, 1.0, 1.0), 40)
    assert split.shape == (40, 40, 3)
    assert (split[:, :16] == 255).all() and (split[:, 24:] == 0).all()
    assert 0 < split[:, 20].mean() < 255


def test_make_dataset_crops_every_image_and_skips_what_exists(originals, tmp_path):
    folder, dataset_csv = originals
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={output}"
    )
    assert result.returncode == 0, result.stderr
    assert "4 crop(s) made, 0 existed, 0 failed" in result.stderr
    for image_id, (_, _, colour) in IMAGES.items():
        with Image.open(output / f"{image_id}.png") as image:
            assert image.size == (299, 299) and image.mode == "RGB"
            pixels = np.asarray(image).astype(int)
            if image_id in ("a1", "c3"):  # JPEG originals: compression blurs the box's edge
                pixels = pixels[30:-30, 30:-30]
            assert np.abs(pixels - colour).max() <= 8
    assert (output / "dataset.csv").read_text() == dataset_csv.read_text()
    # A rerun skips what exists (a changed crop is kept as it is).
    marker = np.zeros((299, 299, 3), np.uint8)
    Image.fromarray(marker).save(output / "a1.png")
    again = make(f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={output}")
    assert again.returncode == 0, again.stderr
    assert "0 crop(s) made, 4 existed, 0 failed" in again.stderr
    assert not np.asarray(Image.open(output / "a1.png")).any()


def test_missing_originals_and_failed_downloads_are_reported_the_others_done(originals, tmp_path):
    folder, dataset_csv = originals
    (folder / "b2.png").unlink()
    (folder / "c3.jpg").write_bytes(b"not an image")
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={output}"
    )
    assert result.returncode == 1, result.stderr
    assert "2 image(s) could not be made" in result.stderr
    assert f"b2: no original b2.jpg/.png in {folder}, and downloads are not" in result.stderr
    assert "1 original(s) are not in --images_dir: give --download" in result.stderr
    assert "c3: " in result.stderr and "is not a readable image" in result.stderr
    assert "BytesIO" not in result.stderr
    assert sorted(p.name for p in output.glob("*.png")) == ["a1.png", "d4.png"]
    listed = [row["ImageId"] for row in csv.DictReader((output / "dataset.csv").open())]
    assert listed == ["a1", "d4"]
    # Offline (here: a closed port), every download fails with its reason and a hint.
    offline = make(
        f"--dataset_csv={dataset_csv}",
        "--download",
        "--timeout=5",
        f"--output_dir={tmp_path / 'o'}",
    )
    assert offline.returncode == 1
    assert "a1: cannot download http://127.0.0.1:9/a1.jpg" in offline.stderr
    assert "no download got through (4 failed): offline?" in offline.stderr


def test_originals_are_downloaded_when_asked(originals, tmp_path):
    folder, _ = originals
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        suffixes = {p.stem: p.name for p in folder.iterdir()}
        lines = [
            csv_line(i, box, url=f"http://127.0.0.1:{port}/{suffixes[i]}")
            for i, (_, box, _) in IMAGES.items()
        ]
        lines.append(csv_line("e5", (0, 0, 1, 1), url=f"http://127.0.0.1:{port}/e5.jpg"))
        served = tmp_path / "served.csv"
        served.write_text("\n".join([HEADER, *lines]) + "\n")
        output = tmp_path / "downloaded"
        result = make(f"--dataset_csv={served}", "--download", f"--output_dir={output}")
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stderr
    assert "e5: cannot download" in result.stderr and "HTTP 404" in result.stderr
    assert sorted(p.stem for p in output.glob("*.png")) == ["a1", "b2", "c3", "d4"]


@pytest.mark.parametrize(
    ("header", "line", "message"),
    [
        ("ImageId,URL,x1,y1,x2,TrueLabel", "a1,u,0,0,1,5", "lacks the column(s) y2, TargetClass"),
        (HEADER, csv_line("a1", (0, 0, 1, 1), label=0), "TrueLabel 0 is outside 1..1000"),
        (HEADER, csv_line("a1", (0, 0, 1, 1), target=1001), "TargetClass 1001 is outside 1..1000"),
        (HEADER, csv_line("a1", (0, 0, 1, 1), label="cat"), "TrueLabel 'cat' is not an integer"),
        (HEADER, csv_line("a1", (0.5, 0, 0.5, 1)), "the box (0.5, 0, 0.5, 1) is empty"),
        (HEADER, csv_line("a1", (0, 0, 1.5, 1)), "x2 1.5 is outside [0, 1]"),
        (HEADER, csv_line("../x", (0, 0, 1, 1)), "ImageId '../x' is not a usable file name"),
        (HEADER, "a1,u,0,0", "line 2: 4 fields, the header has 12"),
    ],
)
def test_a_bad_csv_is_refused_with_exit_2_and_nothing_written(tmp_path, header, line, message):
    dataset_csv = tmp_path / "bad.csv"
    dataset_csv.write_text(f"{header}\n{line}\n")
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_dataset_csv(dataset_csv)
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={tmp_path}", f"--output_dir={output}"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("make_dataset: error: dataset CSV") and message in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


def test_every_bad_line_is_listed_once(tmp_path):
    dataset_csv = tmp_path / "bad.csv"
    lines = [
        csv_line("a1", (0, 0, 1, 1), label=0),
        csv_line("b2", (0, 0, 1, 1)),
        csv_line("b2", (0, 0, 1, 1)),
    ]
    dataset_csv.write_text("\n".join([HEADER, *lines]) + "\n")
    with pytest.raises(DatasetError) as caught:
        read_dataset_csv(dataset_csv)
    assert "line 2: TrueLabel 0 is outside 1..1000" in str(caught.value)
    assert "line 4: ImageId b2 repeats line 3" in str(caught.value)


def test_sample_is_deterministic_with_its_seed():
    items = list(range(100))
    first = sample(items, 10, seed=3)
    assert first == sample(items, 10, seed=3) and first == sorted(first)
    assert first != sample(items, 10, seed=4)
    assert len(set(first)) == 10
    with pytest.raises(ParameterError, match="count=101 exceeds the 100 items"):
        sample(items, 101, seed=0)


def test_select_correct_keeps_what_every_model_gets_right(originals, tmp_path):
    folder, dataset_csv = originals
    dataset = read_dataset_csv(dataset_csv)
    calls = []

    def classify(model, pixels):
        """Stub: model "red" sees only the red image right, "all" every image."""
        calls.append((model, pixels.shape))
        red = pixels[:, :, :, 0].mean(axis=(1, 2)) > 150
        labels = np.array([10, 20, 30, 40])[: len(pixels)] if model == "all" else None
        return labels if labels is not None else np.where(red, 10, 999)

    make_dataset(dataset, tmp_path / "crops", images_dir=folder, progress=False)
    kept, accuracies = select_correct(
        dataset.rows, tmp_path / "crops", ["all", "red"], classify, batch_size=4
    )
    assert [row.image_id for row in kept] == ["a1"]
    assert accuracies == {"all": 1.0, "red": 0.25}
    assert calls == [("all", (4, 299, 299, 3)), ("red", (4, 299, 299, 3))]


def test_selection_and_sample_leave_only_the_final_set_in_the_output(originals, tmp_path):
    folder, dataset_csv = originals
    dataset = read_dataset_csv(dataset_csv)
    output = tmp_path / "paper"

    def all_right(model, pixels):
        return np.array([10, 20, 30, 40])[: len(pixels)]

    report = make_dataset(
        dataset,
        output,
        images_dir=folder,
        select=["m"],
        classify=all_right,
        sample_size=2,
        seed=1,
        batch_size=4,
        progress=False,
    )
    chosen = [row.image_id for row in report.final]
    assert chosen == [dataset.rows[i].image_id for i in sample(range(4), 2, seed=1)]
    assert sorted(p.stem for p in (output / "all").glob("*.png")) == sorted(IMAGES)
    assert sorted(p.stem for p in output.glob("*.png")) == sorted(chosen)
    listed = [row["ImageId"] for row in csv.DictReader((output / "dataset.csv").open())]
    assert listed == chosen
    with pytest.raises(
        ParameterError, match=r"sample_size=5 is not in 1\.\.4, the images available"
    ):
        make_dataset(dataset, output, images_dir=folder, sample_size=5, progress=False)


def test_command_line_errors_exit_2(originals, tmp_path):
    folder, dataset_csv = originals
    for args, message in (
        ([f"--dataset_csv={dataset_csv}", f"--output_dir={tmp_path}"], "--images_dir"),
        (
            [
                f"--dataset_csv={dataset_csv}",
                f"--output_dir={tmp_path}",
                f"--images_dir={tmp_path}/no",
            ],
            "is not a directory",
        ),
        (
            [
                f"--dataset_csv={dataset_csv}",
                f"--output_dir={tmp_path}",
                f"--images_dir={folder}",
                "--sample=9",
            ],
            "--sample=9 is not in 1..4, the rows of the CSV",
        ),
        (
            [
                f"--dataset_csv={tmp_path}/none.csv",
                f"--output_dir={tmp_path}",
                f"--images_dir={folder}",
            ],
            "cannot read dataset CSV",
        ),
    ):
        result = make(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


def test_select_correct_without_checkpoints_fails_before_cropping(originals, tmp_path):
    folder, dataset_csv = originals
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}",
        f"--images_dir={folder}",
        f"--output_dir={output}",
        "--select_correct=inception_v3",
        f"--checkpoint_dir={tmp_path / 'none'}",
    )
    assert result.returncode == 2, result.stderr
    assert "--select_correct=inception_v3: no checkpoint at" in result.stderr
    assert "download_checkpoints inception_v3" in result.stderr
    assert not output.exists()


def assert_refused(result, message):
    """Exit 2 with one error line holding `message`."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("make_dataset: error: "), result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "crops are kept" not in result.stderr  # refused before anything is made


def test_the_input_csv_is_never_rewritten(originals, tmp_path):
    folder, dataset_csv = originals
    (folder / "b2.png").unlink()
    output = tmp_path / "dataset"
    output.mkdir()
    own_csv = output / "dataset.csv"
    own_csv.write_text(dataset_csv.read_text())
    for extra in ([], ["--sample=2"]):
        result = make(
            f"--dataset_csv={own_csv}", f"--images_dir={folder}", f"--output_dir={output}", *extra
        )
        assert_refused(result, f"--output_dir {output} holds the dataset CSV {own_csv}")
        assert own_csv.read_text() == dataset_csv.read_text()
        assert os.listdir(output) == ["dataset.csv"]
    # Beside it, under another name, it is read and kept as it is.
    beside = output / "dev_dataset.csv"
    own_csv.rename(beside)
    result = make(f"--dataset_csv={beside}", f"--images_dir={folder}", f"--output_dir={output}")
    assert result.returncode == 1 and beside.read_text() == dataset_csv.read_text()


def test_originals_are_never_taken_for_crops(originals, tmp_path):
    folder, dataset_csv = originals
    before = sorted(os.listdir(folder))
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={folder}"
    )
    assert_refused(result, f"--images_dir {folder} is the --output_dir")
    result = make(
        f"--dataset_csv={dataset_csv}",
        f"--images_dir={folder}",
        f"--output_dir={tmp_path / 'out'}",
        f"--crops_dir={folder}",
    )
    assert_refused(result, f"--images_dir {folder} is where the crops go ({folder})")
    assert sorted(os.listdir(folder)) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (csv_line("a" * 300, (0, 0, 1, 1)), "line 3: ImageId 'aaaa"),
        (csv_line("big", (0, 0, 1, 1), url="u" * (130 << 10)), "line 3: field larger than"),
    ],
)
def test_csv_input_that_cannot_be_used_names_its_line(originals, tmp_path, row, message):
    folder, dataset_csv = originals
    bad = tmp_path / "bad.csv"
    lines = dataset_csv.read_text().splitlines()
    bad.write_text("\n".join([*lines[:2], row, *lines[2:]]) + "\n")
    output = tmp_path / "dataset"
    result = make(f"--dataset_csv={bad}", f"--images_dir={folder}", f"--output_dir={output}")
    assert_refused(result, message)
    assert str(bad) in result.stderr and not output.exists()


def test_a_fifo_dataset_csv_is_refused_at_once(originals, tmp_path):
    folder, _ = originals
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    output = tmp_path / "dataset"
    result = make(f"--dataset_csv={fifo}", f"--images_dir={folder}", f"--output_dir={output}")
    assert_refused(result, f"cannot read dataset CSV {fifo}: a FIFO, not a regular file")
    assert not output.exists()


def test_an_unreadable_original_is_skipped_with_its_reason(originals, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    folder, dataset_csv = originals
    (folder / "a1.jpg").chmod(0)
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={output}"
    )
    assert result.returncode == 1, result.stderr
    assert f"a1: cannot read {folder / 'a1.jpg'}: Permission denied" in result.stderr
    assert sorted(p.stem for p in output.glob("*.png")) == ["b2", "c3", "d4"]


def test_a_fifo_original_is_skipped_with_its_reason(originals, tmp_path):
    folder, dataset_csv = originals
    (folder / "a1.jpg").unlink()
    os.mkfifo(folder / "a1.jpg")
    output = tmp_path / "dataset"
    result = make(
        f"--dataset_csv={dataset_csv}", f"--images_dir={folder}", f"--output_dir={output}"
    )
    assert result.returncode == 1, result.stderr
    assert f"a1: cannot read {folder / 'a1.jpg'}: a FIFO, not a regular file" in result.stderr
    assert sorted(p.stem for p in output.glob("*.png")) == ["b2", "c3", "d4"]
