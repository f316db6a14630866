"""Reading input PNGs of every kind, rejecting bad files with a reason, writing CSVs atomically."""

import csv
import os
import stat
import threading

import numpy as np
import pytest
from PIL import Image

from defense.images import (
    ImageError,
    InputError,
    check_output_file,
    list_inputs,
    read_image,
    to_model_input,
    write_csv_atomic,
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


def test_output_location_is_checked(tmp_path):
    assert check_output_file(tmp_path / "out.csv") == tmp_path / "out.csv"
    with pytest.raises(InputError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "out.csv")
    with pytest.raises(InputError, match="is a directory"):
        check_output_file(tmp_path)


def test_csv_is_quoted_and_replaced_atomically(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    write_csv_atomic(out, [("a,b.png", 3), ('say "hi".png', 7), ("plain.png", 1000)])
    assert out.read_text() == '"a,b.png",3\n"say ""hi"".png",7\nplain.png,1000\n'
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == ["a,b.png", "3"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("kept\n")

    def rows():
        yield ("a.png", 1)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_csv_atomic(out, rows())
    assert out.read_text() == "kept\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------ outputs that must not be destroyed (issue 9)


def test_output_that_is_an_input_image_is_refused(tmp_path, rgb):
    image = save(tmp_path / "a.png", rgb)
    with pytest.raises(InputError, match="is one of the input images"):
        check_output_file(image, inputs=[image])
    link = tmp_path / "link.csv"
    link.symlink_to(image)
    with pytest.raises(InputError, match="is one of the input images"):
        check_output_file(link, inputs=[image])


def test_devices_fifos_and_directories_are_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in [(fifo, "a FIFO"), ("/dev/null", "a character device")]:
        with pytest.raises(InputError, match=f"is {kind}, not a regular file"):
            check_output_file(path)
        with pytest.raises(InputError, match=kind):
            write_csv_atomic(path, [("a.png", 1)])
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    read_end, write_end = os.pipe()  # /dev/stdout of a process whose output is piped
    try:
        with pytest.raises(InputError, match="is a FIFO"):
            check_output_file(f"/proc/self/fd/{write_end}")
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(InputError, match="is a directory"):
        write_csv_atomic(tmp_path, [("a.png", 1)])


def test_a_symlinked_output_keeps_its_link(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "out.csv"
    link.symlink_to(target)
    write_csv_atomic(link, [("a.png", 1)])
    assert link.is_symlink() and target.read_text() == "a.png,1\n"


def test_hard_linked_and_read_only_outputs_are_refused(tmp_path):
    linked = tmp_path / "out.csv"
    linked.write_text("kept\n")
    os.link(linked, tmp_path / "other.csv")
    with pytest.raises(InputError, match="2 hard links"):
        write_csv_atomic(linked, [("a.png", 1)])
    read_only = tmp_path / "ro.csv"
    read_only.write_text("kept\n")
    read_only.chmod(0o444)
    for call in (check_output_file, lambda path: write_csv_atomic(path, [])):
        with pytest.raises(InputError, match="is read-only"):
            call(read_only)
    assert linked.read_text() == read_only.read_text() == "kept\n"


def test_an_existing_file_keeps_its_mode(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    out.chmod(0o600)
    write_csv_atomic(out, [("a.png", 1)])
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_carriage_returns_and_non_utf8_names_round_trip(tmp_path):
    out = tmp_path / "out.csv"
    odd = os.fsdecode(b"caf\xe9.png")
    write_csv_atomic(out, [("a\rb.png", 1), ("c\nd.png", 2), (odd, 3)])
    assert out.read_bytes().endswith(b"caf\xe9.png,3\n")
    with open(out, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        assert list(csv.reader(handle)) == [["a\rb.png", "1"], ["c\nd.png", "2"], [odd, "3"]]


def test_the_rename_is_made_durable_without_touching_the_umask(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor):
        synced.append(stat.S_ISDIR(os.fstat(descriptor).st_mode))
        real_fsync(descriptor)

    def umask(mask):
        raise AssertionError("os.umask changes the mask of every thread")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "umask", umask)
    write_csv_atomic(tmp_path / "out.csv", [("a.png", 1)])
    assert synced == [False, True]
    monkeypatch.undo()
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o666 & ~_umask()


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


def test_concurrent_writers_leave_one_whole_csv(tmp_path):
    out = tmp_path / "out.csv"
    contents = {writer: [(f"{writer}_{i}.png", i) for i in range(200)] for writer in ("a", "b")}
    expected = {
        writer: "".join(f"{name},{label}\n" for name, label in rows)
        for writer, rows in contents.items()
    }
    errors = []

    def write(writer):
        try:
            for _ in range(30):
                write_csv_atomic(out, contents[writer])
                assert out.read_text() in expected.values()
        except Exception as error:  # reported below: a thread's assert would be lost
            errors.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert out.read_text() in expected.values()
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]
