"""Atomic outputs: CSVs quoted and replaced whole, and nothing destroyed by a write."""

import csv
import os
import stat
import threading

import numpy as np
import pytest
from PIL import Image

from defense.common.errors import InputError
from defense.common.files import check_output_file, write_csv_atomic


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


def test_output_that_is_an_input_image_is_refused(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
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
