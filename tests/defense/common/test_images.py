"""Reading input PNGs of every kind and rejecting bad files with a reason."""

import os

import numpy as np
import pytest
from PIL import Image

from defense.common.errors import InputError
from defense.common.images import (
    ImageError,
    from_model_input,
    list_inputs,
    read_image,
    to_model_input,
)


def save(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (299, 299, 3), dtype=np.uint8)


def test_rgb_png_is_read_unchanged(tmp_path, rgb):
    loaded = read_image(save(tmp_path / "a.png", rgb))
    np.testing.assert_array_equal(loaded.pixels, rgb)
    assert loaded.conversions == [] and loaded.resized_from is None


def test_model_input_is_minus_one_to_one():
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    np.testing.assert_allclose(to_model_input(pixels), [[[-1.0, 1.0, -0.6]]], atol=1e-6)


def test_grayscale_rgba_palette_and_16bit_become_rgb(tmp_path, rgb):
    gray = rgb[:, :, 0]
    loaded = read_image(save(tmp_path / "gray.png", gray))
    np.testing.assert_array_equal(loaded.pixels, np.repeat(gray[:, :, None], 3, axis=2))

    rgba = np.concatenate([rgb, np.full((299, 299, 1), 7, np.uint8)], axis=2)
    loaded = read_image(save(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(loaded.pixels, rgb)
    assert "alpha dropped" in loaded.conversions[0]

    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "palette.png")
    loaded = read_image(tmp_path / "palette.png")
    np.testing.assert_array_equal(loaded.pixels, np.asarray(palette.convert("RGB")))

    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    loaded = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(loaded.pixels[:, :, 1], gray)
    assert "16-bit" in loaded.conversions[0]


def test_other_sizes_are_resized_and_reported(tmp_path, rgb):
    loaded = read_image(save(tmp_path / "small.png", rgb[:200, :150]))
    assert loaded.pixels.shape == (299, 299, 3)
    assert loaded.resized_from == (150, 200)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "not a PNG file (JPEG data)"),
        (b"hello, I am text", "not a PNG file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "corrupt PNG"),
    ],
)
def test_unusable_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_image(path)


def test_truncated_png_is_corrupt(tmp_path, rgb):
    data = save(tmp_path / "full.png", rgb).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt PNG"):
        read_image(tmp_path / "cut.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    Image.new("L", (5000, 5000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(ImageError, match="decompression-bomb"):
        read_image(tmp_path / "bomb.png")


def test_unreadable_files_raise(tmp_path, monkeypatch, rgb):
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageError, match="cannot read file"):
        read_image(tmp_path / "dangling.png")

    path = save(tmp_path / "locked.png", rgb)

    def denied(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ImageError, match="Permission denied"):
        read_image(path)


def test_list_inputs_sorts_images_from_ignored_entries(tmp_path, rgb):
    save(tmp_path / "b.png", rgb)
    save(tmp_path / "a.png", rgb)
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    (tmp_path / "upper.PNG").write_bytes(b"")
    listing = list_inputs(tmp_path)
    assert [path.name for path in listing.images] == ["a.png", "b.png", "photo.jpg", "upper.PNG"]
    assert [path.name for path in listing.ignored] == [".DS_Store", "notes.txt", "sub"]


def test_missing_or_empty_input_dir(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no PNG files"):
        list_inputs(tmp_path)
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(InputError, match=r"no PNG files \(ignored: README.md\)"):
        list_inputs(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        list_inputs(tmp_path / "file")


# ------------------------------------------------ inputs that are not regular files (issue 9)


def test_devices_and_fifos_are_refused_without_reading_or_blocking(tmp_path):
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.png")
    os.mkfifo(tmp_path / "notes.txt")
    listing = list_inputs(tmp_path)
    assert [path.name for path in listing.images] == ["fifo.png", "zero.png"]
    assert [path.name for path in listing.ignored] == ["notes.txt"]
    with pytest.raises(ImageError, match="not a regular file \\(a character device\\)"):
        read_image(tmp_path / "zero.png")
    with pytest.raises(ImageError, match="not a regular file \\(a FIFO\\)"):
        read_image(tmp_path / "fifo.png")


def test_hidden_files_and_folders_are_listed_as_ignored(tmp_path, rgb):
    save(tmp_path / "a.png", rgb)
    save(tmp_path / ".hidden.png", rgb)
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "linked.png").symlink_to(tmp_path / "folder.png")
    listing = list_inputs(tmp_path)
    assert [path.name for path in listing.images] == ["a.png"]
    assert [path.name for path in listing.ignored] == [".hidden.png", "folder.png", "linked.png"]


def test_a_symlink_loop_is_reported_not_followed(tmp_path, rgb):
    save(tmp_path / "a.png", rgb)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    listing = list_inputs(tmp_path)
    assert [path.name for path in listing.images] == ["a.png", "loop.png"]
    with pytest.raises(ImageError, match="cannot read file: Too many levels of symbolic links"):
        read_image(tmp_path / "loop.png")


def test_from_model_input_inverts_to_model_input_and_clips():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_allclose(from_model_input(to_model_input(pixels)), pixels, atol=1e-4)
    np.testing.assert_array_equal(from_model_input(np.array([-1.5, 0.0, 1.5])), [0, 127.5, 255])
