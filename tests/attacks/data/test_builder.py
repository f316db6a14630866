"""attacks.data.builder without the command: downloads from a local server that misbehaves
(trickles, truncates, redirects away from http), ImageIds that cannot be file names, and
output folders that would overwrite or be taken for the inputs."""

import http.server
import io
import os
import re
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from attacks.data import builder
from attacks.data.builder import (
    DatasetError,
    SourceError,
    download,
    make_dataset,
    original_image,
    read_dataset_csv,
)
from defense.common.errors import ParameterError

HEADER = "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass"
TRICKLED = 60  # bytes sent one every 0.1 s: a download that ignores its deadline takes 6 s


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    """Each path is one way a server can behave."""

    def log_message(self, *args):
        pass

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def trickle(self, count):
        for _ in range(count):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def do_GET(self):
        if self.path == "/image.png":
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/trickled-body":
            self.send_response(200)
            self.send_header("Content-Length", str(TRICKLED))
            self.end_headers()
            self.trickle(TRICKLED)
        elif self.path == "/trickled-header":
            self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
            self.trickle(TRICKLED)
            self.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(png_bytes()[:40])
            self.close_connection = True
        elif self.path == "/to-ftp":
            self.redirect("ftp://127.0.0.1:9/image.png")
        elif self.path == "/to-file":
            self.redirect("file:///etc/hostname")
        elif self.path == "/loop":
            self.redirect("/loop")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    """The base URL of a local server running `Handler`."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_download_that_works(server):
    assert download(f"{server}/image.png", timeout=5) == png_bytes()


@pytest.mark.parametrize("path", ["/trickled-body", "/trickled-header"])
def test_timeout_bounds_the_whole_download_not_each_read(server, path):
    # Each byte comes within 0.1 s, so only a deadline on the whole download stops it.
    with pytest.raises(SourceError, match=r"took longer than the timeout of 1 s") as caught:
        download(f"{server}{path}", timeout=1)
    assert caught.value.kind == "network"


def test_a_truncated_body_is_reported_as_truncated(server):
    with pytest.raises(SourceError) as caught:
        download(f"{server}/short", timeout=5)
    assert str(caught.value) == (
        f"{server}/short is truncated: Content-Length announced 1000 bytes, got 40"
    )


@pytest.mark.parametrize("path", ["/to-ftp", "/to-file"])
def test_redirects_go_to_http_and_https_only(server, path):
    with pytest.raises(SourceError, match=r"cannot download .*: HTTP 302 .*(refused|not allowed)"):
        download(f"{server}{path}", timeout=5)


def test_a_redirect_loop_is_said_on_one_line(server):
    with pytest.raises(SourceError, match="HTTP 302") as caught:
        download(f"{server}/loop", timeout=5)
    assert "\n" not in str(caught.value) and "loop" in str(caught.value)


def write_csv(path, *lines):
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


@pytest.mark.parametrize(
    ("image_id", "problem"),
    [
        ("a" * 300, "longer than 200 bytes"),
        ("é" * 101, "longer than 200 bytes"),
        ("..", "starts with '.'"),
        ("a/b", "holds '/'"),
        ("a\\b", "holds '\\\\'"),
        ("a\tb", "holds a control character"),
        ("a\0b", "holds a control character"),
    ],
)
def test_image_ids_that_cannot_be_file_names_are_refused_by_line(tmp_path, image_id, problem):
    quoted = '"' + image_id + '"'
    path = write_csv(tmp_path / "d.csv", "ok,u,0,0,1,1,1,2", f"{quoted},u,0,0,1,1,1,2")
    with pytest.raises(DatasetError) as caught:
        read_dataset_csv(path)
    message = str(caught.value)
    assert "line 3: ImageId " in message and "is not a usable file name" in message, message
    assert problem in message and len(message) < 300


def test_an_oversized_field_is_refused_naming_the_file_and_line(tmp_path):
    path = write_csv(tmp_path / "d.csv", "ok,u,0,0,1,1,1,2", f"big,{'u' * (130 << 10)},0,0,1,1,1,2")
    with pytest.raises(DatasetError) as caught:
        read_dataset_csv(path)
    assert str(caught.value) == (
        f"cannot read dataset CSV {path}: line 3: field larger than field limit (131072)"
    )


def test_a_fifo_dataset_csv_is_refused_at_once(tmp_path):
    fifo = tmp_path / "d.csv"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError) as caught:
        read_dataset_csv(fifo)
    assert str(caught.value) == f"cannot read dataset CSV {fifo}: a FIFO, not a regular file"


@pytest.fixture
def dataset(tmp_path):
    """A one-row dataset CSV and its original, in tmp_path/originals."""
    folder = tmp_path / "originals"
    folder.mkdir()
    (folder / "a1.png").write_bytes(png_bytes())
    return read_dataset_csv(write_csv(tmp_path / "d.csv", "a1,u,0,0,1,1,1,2")), folder


def test_the_output_never_replaces_the_input_csv(tmp_path, dataset):
    _, folder = dataset
    output = tmp_path / "out"
    output.mkdir()
    source = write_csv(output / "dataset.csv", "a1,u,0,0,1,1,1,2", "b2,u,0,0,1,1,1,2")
    before = source.read_text()
    own = read_dataset_csv(source)
    with pytest.raises(ParameterError, match=r"output_dir .* holds the dataset CSV") as caught:
        make_dataset(own, output, images_dir=folder, sample_size=1, progress=False)
    assert caught.value.parameters == ("output_dir",)
    assert source.read_text() == before and sorted(os.listdir(output)) == ["dataset.csv"]
    # A link to it is the same file.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "dataset.csv").symlink_to(source)
    with pytest.raises(ParameterError, match="holds the dataset CSV"):
        builder.check_locations(own, linked, images_dir=folder)
    assert source.read_text() == before


def test_originals_are_never_taken_for_crops(tmp_path, dataset):
    data, folder = dataset
    with pytest.raises(ParameterError, match=r"images_dir .* is the output_dir") as caught:
        make_dataset(data, folder, images_dir=folder, progress=False)
    assert set(caught.value.parameters) == {"images_dir", "output_dir"}
    with pytest.raises(ParameterError, match=r"images_dir .* is where the crops go") as caught:
        make_dataset(data, tmp_path / "out", crops_dir=folder, images_dir=folder, progress=False)
    assert set(caught.value.parameters) == {"images_dir", "crops_dir"}
    # With a selection or a sample the crops go to output_dir/all and the final set to output_dir.
    with pytest.raises(ParameterError, match=r"images_dir .* is the output_dir"):
        make_dataset(data, folder, images_dir=folder, sample_size=1, progress=False)
    (tmp_path / "out" / "all").mkdir(parents=True)
    with pytest.raises(ParameterError, match=r"is where the crops go \(.*out/all\)"):
        builder.check_locations(
            data, tmp_path / "out", images_dir=tmp_path / "out/all", narrowed=True
        )
    assert sorted(os.listdir(folder)) == ["a1.png"] and os.listdir(tmp_path / "out") == ["all"]
    # A folder inside the originals is fine: originals are looked up in images_dir only.
    report = make_dataset(data, folder / "crops", images_dir=folder, progress=False)
    assert report.build.written == ["a1"]


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge", "unreadable"])
def test_an_original_that_cannot_be_read_is_a_reason(tmp_path, dataset, kind):
    data, folder = dataset
    path = folder / "a1.jpg"
    (folder / "a1.png").unlink()
    if kind == "fifo":
        os.mkfifo(path)
        reason = "a FIFO, not a regular file"
    elif kind == "directory":
        path.mkdir()
        reason = "Is a directory"
    elif kind == "huge":
        with path.open("wb") as handle:
            handle.truncate((64 << 20) + 1)
        reason = "larger than 64 MiB"
    else:
        if os.geteuid() == 0:
            pytest.skip("running as root: chmod 000 does not stop root from reading")
        path.write_bytes(png_bytes())
        path.chmod(0)
        reason = "Permission denied"
    with pytest.raises(SourceError) as caught:
        original_image(data.rows[0], images_dir=folder, allow_download=False)
    assert str(caught.value) == f"cannot read {path}: {reason}"


def test_unreadable_images_say_where_they_come_from(tmp_path, dataset):
    data, folder = dataset
    (folder / "a1.png").write_bytes(b"not an image")
    with pytest.raises(SourceError) as caught:
        original_image(data.rows[0], images_dir=folder, allow_download=False)
    assert str(caught.value).startswith(f"{folder / 'a1.png'} is not a readable image")
    assert "BytesIO" not in str(caught.value)
    (folder / "a1.png").unlink()
    truncated = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(truncated, format="JPEG")
    (folder / "a1.jpg").write_bytes(truncated.getvalue()[:-200])
    with pytest.raises(SourceError, match=re.escape(f"{folder / 'a1.jpg'} is truncated")):
        original_image(data.rows[0], images_dir=folder, allow_download=False)


def test_an_existing_crop_that_is_not_a_file_is_a_failure(tmp_path, dataset):
    data, folder = dataset
    output = tmp_path / "out"
    output.mkdir()
    os.mkfifo(output / "a1.png")
    report = make_dataset(data, output, crops_dir=output, images_dir=folder, progress=False)
    assert report.build.failures == {"a1": f"{output / 'a1.png'} is a FIFO, not a regular file"}
    assert Path(output / "a1.png").is_fifo()
