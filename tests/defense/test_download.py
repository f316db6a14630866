"""Checkpoint download, verification and installation against a loopback HTTP server.

The tarballs hold tiny generated checkpoints and the model's expected manifest is
replaced by a matching fake one, so no test builds a real network or touches the
real internet: every URL points at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from defense import download
from defense.models.registry import ModelSpec

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "download_checkpoints.py"
MANIFEST = {"tiny/conv/weights": (3, 3, 3, 4), "tiny/logits/biases": (10,)}
V2_FILES = ["tiny.ckpt.data-00000-of-00001", "tiny.ckpt.index"]


def tiny_spec(**overrides) -> ModelSpec:
    fields = dict(
        name="tiny",
        build=None,
        checkpoint_file="tiny.ckpt",
        tarball="tiny_2017_08_18.tar.gz",
        default_image_size=32,
        has_aux=False,
        num_variables=len(MANIFEST),
        num_parameters=118,
    )
    return ModelSpec(**{**fields, **overrides})


def write_v2(prefix: Path, manifest=MANIFEST) -> list[Path]:
    """A V2 checkpoint with `manifest`'s variables plus a global_step to be ignored."""
    names = [*manifest, "global_step"]
    tensors = [np.ones(shape, np.float32) for shape in manifest.values()] + [np.int64(7)]
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    return sorted(prefix.parent.glob(prefix.name + ".*"))


def make_tarball(path: Path, files: dict[str, Path], extra=(), mode="w:gz") -> Path:
    """Tarball with `files` (member name -> source) and `extra` prepared TarInfo members."""
    with tarfile.open(path, mode) as archive:
        for member, source in files.items():
            archive.add(source, arcname=member)
        for info, data in extra:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def device(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def symlink_chain(depth: int = 40) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Nested links whose resolved path outgrows PATH_MAX, then a link through them that
    climbs out, then a file written through it: the shape of CVE-2025-4517 (which needs
    more care to trigger; refusing every link member closes the whole class)."""
    component = "d" * 200
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = ""
    for _ in range(depth):
        members.append(symlink(f"{path}a", component))
        members.append(directory(f"{path}{component}"))
        path += "a/"
    members.append(symlink(f"{path}escape", "../" * (depth * 2 + 8) + "tmp"))
    members.append(regular(f"{path}escape/evil.txt", b"escaped"))
    return members


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def regular(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def fake_manifest(monkeypatch):
    monkeypatch.setattr(download, "expected_shapes", lambda name: dict(MANIFEST))


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base_url, request paths)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/models/", requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def good_tarball(served, tmp_path):
    """The tiny spec's official-looking tarball, served; returns its path."""
    folder, _, _ = served
    (folder / "models").mkdir()
    source = tmp_path / "source"
    source.mkdir()
    files = write_v2(source / "tiny.ckpt")
    return make_tarball(folder / "models" / tiny_spec().tarball, {p.name: p for p in files})


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "repo" / "checkpoints"


def fetch(spec, target, base_url, **options):
    return download.ensure_checkpoint(spec, target, base_url=base_url, progress=False, **options)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_verifies_installs_and_locks(served, good_tarball, target):
    _, base_url, _ = served
    assert fetch(tiny_spec(), target, base_url) == "downloaded"
    assert listing(target) == sorted([*V2_FILES, download.LOCK_FILE])  # no temporary leftovers
    entry = json.loads((target / download.LOCK_FILE).read_text())["tiny"]
    assert entry["url"] == base_url + "tiny_2017_08_18.tar.gz"
    assert entry["sha256"] == sha256(good_tarball)
    assert entry["size"] == good_tarball.stat().st_size
    assert entry["date"].startswith(str(time.gmtime().tm_year))
    reader = tf.train.load_checkpoint(str(target / "tiny.ckpt"))
    assert reader.get_variable_to_shape_map()["tiny/logits/biases"] == [10]


def test_known_good_hash_is_accepted(served, good_tarball, target):
    spec = tiny_spec(tarball_sha256=sha256(good_tarball).upper())
    assert fetch(spec, target, served[1]) == "downloaded"


def test_second_run_skips_and_force_downloads_again(served, good_tarball, target):
    _, base_url, requests = served
    fetch(tiny_spec(), target, base_url)
    lock = (target / download.LOCK_FILE).read_text()
    assert fetch(tiny_spec(), target, base_url) == "present"
    assert len(requests) == 1
    assert fetch(tiny_spec(), target, base_url, force=True) == "downloaded"
    assert len(requests) == 2
    assert (target / download.LOCK_FILE).read_text() == lock  # same file: entry kept as first seen


def test_broken_installed_checkpoint_is_replaced(served, good_tarball, target):
    target.mkdir(parents=True)
    (target / "tiny.ckpt.index").write_bytes(b"not a checkpoint")
    assert fetch(tiny_spec(), target, served[1]) == "downloaded"
    assert listing(target) == sorted([*V2_FILES, download.LOCK_FILE])


def test_sha_differing_from_lock_is_refused(served, good_tarball, target):
    target.mkdir(parents=True)
    entry = {"url": "x", "sha256": "0" * 64, "size": 1, "date": "2017-08-18T00:00:00+00:00"}
    (target / download.LOCK_FILE).write_text(json.dumps({"tiny": entry}))
    with pytest.raises(download.DownloadError, match="delete the 'tiny' entry") as caught:
        fetch(tiny_spec(), target, served[1])
    assert sha256(good_tarball) in str(caught.value)
    assert listing(target) == [download.LOCK_FILE]
    assert json.loads((target / download.LOCK_FILE).read_text()) == {"tiny": entry}


def test_known_hash_mismatch_is_refused(served, good_tarball, target):
    with pytest.raises(download.DownloadError, match="registry expects 1111"):
        fetch(tiny_spec(tarball_sha256="1" * 64), target, served[1])
    assert listing(target) == []


def test_manifest_mismatch_is_refused_with_the_diff(served, good_tarball, target, monkeypatch):
    wanted = {"tiny/conv/weights": (3, 3, 3, 8), "tiny/extra/weights": (2,)}
    monkeypatch.setattr(download, "expected_shapes", lambda name: wanted)
    with pytest.raises(download.DownloadError) as caught:
        fetch(tiny_spec(), target, served[1])
    message = str(caught.value)
    assert "does not match the tiny model" in message
    assert "tiny/extra/weights" in message  # missing
    assert "tiny/logits/biases" in message  # unexpected
    assert "tiny/conv/weights: [3, 3, 3, 8] vs [3, 3, 3, 4]" in message
    assert listing(target) == []


def test_v1_checkpoint_in_a_subfolder(served, tmp_path, target):
    folder, base_url, _ = served
    (folder / "models").mkdir()
    v1 = tmp_path / "tiny_v1.ckpt"
    names = list(MANIFEST)
    data = [np.zeros(MANIFEST[name], np.float32) for name in names]
    tf.raw_ops.Save(filename=str(v1), tensor_names=names, data=data)
    spec = tiny_spec(checkpoint_file="tiny_2016_08_30.ckpt")
    make_tarball(folder / "models" / spec.tarball, {"release/tiny_2016_08_30.ckpt": v1})
    assert fetch(spec, target, base_url) == "downloaded"
    assert listing(target) == sorted(["tiny_2016_08_30.ckpt", download.LOCK_FILE])


@pytest.mark.parametrize("published_matches", [True, False])
def test_published_checkpoint_sha1_is_checked(served, tmp_path, target, published_matches):
    folder, base_url, _ = served
    v1 = tmp_path / "tiny_v1.ckpt"
    names = list(MANIFEST)
    data = [np.ones(MANIFEST[name], np.float32) for name in names]
    tf.raw_ops.Save(filename=str(v1), tensor_names=names, data=data)
    sha1 = hashlib.sha1(v1.read_bytes()).hexdigest() if published_matches else "0" * 40
    spec = tiny_spec(checkpoint_file="tiny_v1.ckpt", checkpoint_sha1=sha1)
    (folder / "models").mkdir()
    make_tarball(folder / "models" / spec.tarball, {"tiny_v1.ckpt": v1})
    if published_matches:
        assert fetch(spec, target, base_url) == "downloaded"
    else:
        with pytest.raises(download.DownloadError, match="published one is 0000"):
            fetch(spec, target, base_url)
        assert listing(target) == []


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([regular("../../../../evil.txt")], id="dotdot"),
        pytest.param([regular("/tmp/evil.txt")], id="absolute"),
        pytest.param([symlink("escape", "../../../../..")], id="symlink-escape"),
        pytest.param([symlink("etc", "/etc")], id="symlink-absolute"),
        pytest.param([hardlink("passwd", "/etc/passwd")], id="hardlink-absolute"),
        pytest.param([hardlink("copy", "tiny.ckpt.index")], id="hardlink-inside"),
        pytest.param([symlink("here", "tiny.ckpt.index")], id="symlink-inside"),
        pytest.param([device("null", tarfile.CHRTYPE)], id="character-device"),
        pytest.param([device("disk", tarfile.BLKTYPE)], id="block-device"),
        pytest.param([device("pipe", tarfile.FIFOTYPE)], id="fifo"),
        pytest.param([regular("tiny.ckpt.index", b"again")], id="duplicate"),
        pytest.param(symlink_chain(), id="long-symlink-chain"),
    ],
)
def test_malicious_tarball_is_refused(served, tmp_path, target, extra):
    folder, base_url, _ = served
    (folder / "models").mkdir()
    source = tmp_path / "source"
    source.mkdir()
    files = {p.name: p for p in write_v2(source / "tiny.ckpt")}
    make_tarball(folder / "models" / tiny_spec().tarball, files, extra)
    with pytest.raises(download.DownloadError, match="refusing unsafe tarball"):
        fetch(tiny_spec(), target, base_url)
    assert listing(target) == []
    assert not list(tmp_path.rglob("evil.txt"))
    assert not Path("/tmp/evil.txt").exists()  # where the symlink chain climbs to


def test_checkpoint_that_is_a_link_is_refused(served, tmp_path, target):
    folder, base_url, _ = served
    (folder / "models").mkdir()
    source = tmp_path / "source"
    source.mkdir()
    data, index = write_v2(source / "tiny.ckpt")
    make_tarball(
        folder / "models" / tiny_spec().tarball,
        {data.name: data, "real.index": index},
        [symlink("tiny.ckpt.index", "real.index")],
    )
    with pytest.raises(download.DownloadError, match=r"'tiny\.ckpt\.index' is a symbolic link"):
        fetch(tiny_spec(), target, base_url)
    assert listing(target) == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        pytest.param(["README"], "does not contain the checkpoint tiny.ckpt", id="no-checkpoint"),
        pytest.param(["tiny.ckpt.index"], "data shards are incomplete", id="no-data"),
        pytest.param(["a/tiny.ckpt.index", "b/tiny.ckpt.index"], "more than one copy", id="two"),
    ],
)
def test_tarball_lacking_the_checkpoint_is_refused(served, tmp_path, target, members, message):
    folder, base_url, _ = served
    (folder / "models").mkdir()
    _, index = write_v2(tmp_path / "tiny.ckpt")
    make_tarball(folder / "models" / tiny_spec().tarball, dict.fromkeys(members, index))
    with pytest.raises(download.DownloadError, match=message):
        fetch(tiny_spec(), target, base_url)
    assert listing(target) == []


def test_a_member_larger_than_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MAX_EXTRACTED_BYTES", 1000)
    bomb = make_tarball(tmp_path / "bomb.tar.gz", {}, [regular("zeros", bytes(5000))])
    assert bomb.stat().st_size < 200  # compresses 25x: the cap, not the file size, decides
    with pytest.raises(download.DownloadError, match="expands to more than 1000 bytes"):
        download._extract(bomb, tmp_path / "out")
    assert not (tmp_path / "out" / "zeros").exists()


def test_a_download_over_the_size_cap_is_refused(served, good_tarball, target, monkeypatch):
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(download.UnreachableError, match=r"announces \d+ bytes, over 100"):
        fetch(tiny_spec(), target, served[1])
    assert listing(target) == []


@pytest.fixture
def trickling():
    """A server that answers one request with a byte every 0.1 s, so that no single read
    times out; yields its base URL."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def trickle():
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):  # the client hangs up: done
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(0.1):
                connection.sendall(b"x")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    listener.close()
    thread.join(5)


def test_a_trickling_server_meets_the_deadline(trickling, target):
    start = time.monotonic()
    with pytest.raises(download.UnreachableError, match="longer than the 1 s deadline"):
        fetch(tiny_spec(), target, trickling, timeout=0.5, deadline=1)
    assert time.monotonic() - start < 5
    assert listing(target) == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_download_leaves_nothing_behind(trickling, target, signum):
    code = CLI_WRAPPER.format(manifest=MANIFEST, script=str(SCRIPT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--noprogress",
            "tiny",
            f"--checkpoint_dir={target}",
            f"--base_url={trickling}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (target.is_dir() and any(p.name.startswith(".download-") for p in target.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signum)
    # Generous: on a loaded 2-core machine the interpreter's teardown with TensorFlow
    # loaded once took over 60 s; a process that never ends still fails here.
    try:
        _, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running 600 s after {signal.Signals(signum).name}")
    assert process.returncode == 130, stderr
    assert "interrupted; tiny was not installed" in stderr and "Traceback" not in stderr
    assert listing(target) == []


def test_official_downloads_use_https():
    assert download.tarball_url(tiny_spec()).startswith("https://download.tensorflow.org/")


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_unusable_checkpoint_dir_is_refused(tmp_path, kind, monkeypatch):
    folder = tmp_path / "checkpoints"
    if kind == "file":
        folder.write_text("not a folder")
    else:
        folder.mkdir()

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(download.tempfile, "TemporaryFile", denied)
    with pytest.raises(download.DownloadError, match=r"checkpoint_dir \S+ cannot be written"):
        fetch(tiny_spec(), folder, "http://127.0.0.1:9/")


def test_not_a_tarball_is_refused(served, target):
    folder, base_url, _ = served
    (folder / "models").mkdir()
    (folder / "models" / tiny_spec().tarball).write_bytes(b"<html>captive portal</html>")
    with pytest.raises(download.DownloadError, match=r"not a valid \.tar\.gz"):
        fetch(tiny_spec(), target, base_url)
    assert listing(target) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_manual_instructions(message: str, url: str, target: Path) -> None:
    assert url in message
    assert f"tar -xzf tiny_2017_08_18.tar.gz -C {target}" in message
    for name in ("tiny.ckpt.index", "tiny.ckpt.data-00000-of-00001", "tiny.ckpt\n"):
        assert name in message


def test_unreachable_server_fails_fast_with_manual_instructions(target):
    base_url = f"http://127.0.0.1:{closed_port()}/models"
    start = time.monotonic()
    with pytest.raises(download.UnreachableError) as caught:
        fetch(tiny_spec(), target, base_url)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert_manual_instructions(message, f"{base_url}/tiny_2017_08_18.tar.gz", target)
    official = "https://download.tensorflow.org/models/tiny_2017_08_18.tar.gz"
    assert f"or the official {official}" in message
    assert listing(target) == []


def test_http_error_gives_manual_instructions(served, target):
    with pytest.raises(download.UnreachableError, match="HTTP 404") as caught:
        fetch(tiny_spec(), target, served[1])
    assert_manual_instructions(str(caught.value), served[1] + "tiny_2017_08_18.tar.gz", target)
    assert listing(target) == []


def test_silent_server_times_out(target):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(download.UnreachableError, match=r"no answer within 0.5 s"):
            fetch(tiny_spec(), target, base_url, timeout=0.5)
    assert time.monotonic() - start < 5
    assert listing(target) == []


def test_invalid_lock_file_is_reported(target):
    target.mkdir(parents=True)
    (target / download.LOCK_FILE).write_text("{oops")
    with pytest.raises(download.DownloadError, match="not valid JSON"):
        download.read_lock(target / download.LOCK_FILE)
    (target / download.LOCK_FILE).write_text("")
    assert download.read_lock(target / download.LOCK_FILE) == {}


def test_select_all_and_unknown_names():
    assert [s.name for s in download.select(["all"])] == list(download.REGISTRY)
    first = next(iter(download.REGISTRY))
    assert [s.name for s in download.select([first, first])] == [first]
    with pytest.raises(ValueError, match="known models"):
        download.select(["no_such_model"])


# The CLI runs in a subprocess with the tiny spec registered and its manifest faked;
# everything else (flags, download, verification, exit status) is the real script.
CLI_WRAPPER = """
import runpy, sys
from defense import download
from defense.models.registry import REGISTRY, ModelSpec
REGISTRY["tiny"] = ModelSpec(
    name="tiny", build=None, checkpoint_file="tiny.ckpt", tarball="tiny_2017_08_18.tar.gz",
    default_image_size=32, has_aux=False, num_variables=2, num_parameters=118)
download.expected_shapes = lambda name: {manifest!r}
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_cli(*args: str, tiny: bool = False) -> subprocess.CompletedProcess:
    code = CLI_WRAPPER.format(manifest=MANIFEST, script=str(SCRIPT))
    command = [sys.executable, "-c", code] if tiny else [sys.executable, str(SCRIPT)]
    return subprocess.run(
        [*command, "--noprogress", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_downloads_then_skips(served, good_tarball, target):
    _, base_url, _ = served
    args = ("tiny", f"--checkpoint_dir={target}", f"--base_url={base_url}")
    first = run_cli(*args, tiny=True)
    assert first.returncode == 0, first.stderr
    assert listing(target) == sorted([*V2_FILES, download.LOCK_FILE])
    second = run_cli(*args, tiny=True)
    assert second.returncode == 0, second.stderr
    assert "already in" in second.stderr


@pytest.mark.slow
def test_cli_unreachable_fails_with_instructions(target):
    base_url = f"http://127.0.0.1:{closed_port()}/models/"
    result = run_cli(
        "ens_adv_inception_resnet_v2", "all", f"--checkpoint_dir={target}", f"--base_url={base_url}"
    )
    assert result.returncode == 2
    assert "error: ens_adv_inception_resnet_v2: cannot download" in result.stderr
    assert "tar -xzf ens_adv_inception_resnet_v2_2017_08_18.tar.gz" in result.stderr
    assert "ens_adv_inception_resnet_v2.ckpt.index" in result.stderr
    others = [name for name in download.REGISTRY if name != "ens_adv_inception_resnet_v2"]
    assert (
        "not installed: ens_adv_inception_resnet_v2; not tried, as the server is unreachable: "
        + ", ".join(others)
    ) in result.stderr
    assert listing(target) == []


def test_cli_unknown_name_lists_known_models(capsys):
    """Refused before any download: the command's main() in this process."""
    from tests.support.adversarial_helpers import in_process

    main = in_process("defense.cli.download_checkpoints", capsys, "--noprogress")
    code, stderr = main("no_such_model")
    assert code == 2
    assert "unknown model 'no_such_model'" in stderr
    assert "ens_adv_inception_resnet_v2" in stderr


@pytest.mark.slow
def test_real_manifest_of_a_registry_model(served, target, irv2_checkpoint, monkeypatch):
    """A generated full Inception-ResNet-v2 checkpoint passes the real Keras manifest check."""
    from defense import models

    monkeypatch.setattr(download, "expected_shapes", models.expected_shapes)
    folder, base_url, _ = served
    (folder / "models").mkdir()
    spec = models.get_spec("ens_adv_inception_resnet_v2")
    prefix = Path(irv2_checkpoint)
    files = {spec.checkpoint_file + p.name[len(prefix.name) :]: p for p in prefix.parent.iterdir()}
    make_tarball(folder / "models" / spec.tarball, files, mode="w")  # gzip would only add time
    assert fetch(spec, target, base_url) == "downloaded"
    assert fetch(spec, target, base_url) == "present"
