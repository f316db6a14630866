"""The harness's parts on their own: epsilon schedules and batches, the toolkit's clipping,
reading attack outputs and defense result files, discovery and dataset errors, the
process runner, the pool, and the command's bad-input messages."""

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from attacks.competition import runner
from attacks.competition.adversarial import clip_outputs, clip_to_ball, distances, pool
from attacks.competition.batches import (
    Batch,
    Dataset,
    DatasetImage,
    parse_epsilon,
    read_dataset,
    sha256_bytes,
)
from attacks.competition.layout import Layout
from attacks.competition.pieces import read_defense_output
from attacks.competition.store import Store, TamperedError, changed_files, place_files
from attacks.competition.submissions import discover, read_submission
from defense.common.cli import in_flags
from defense.common.errors import InputError, ParameterError
from tests.support.competition_submissions.fixtures import (
    REPO,
    alive,
    link_toys,
    make_dataset,
    toy_pixels,
    write_metadata,
)


def sha256_file(path):
    return sha256_bytes(path.read_bytes())


# ------------------------------------------------------------- epsilon and batches


@pytest.mark.parametrize(
    ("value", "schedule"), [("cycle", (4, 8, 12, 16)), ("16", (16,)), ("0", (0,)), ("255", (255,))]
)
def test_epsilon_schedules(value, schedule):
    assert parse_epsilon(value) == schedule


@pytest.mark.parametrize("value", ["256", "-1", "4.5", "cycles", ""])
def test_bad_epsilon_names_the_flag(value):
    with pytest.raises(ParameterError) as raised:
        parse_epsilon(value)
    assert in_flags(raised.value).startswith("--epsilon must be an integer in 0..255 or 'cycle'")


def images(count):
    return tuple(DatasetImage(f"i{k}", None, 1, 2, "") for k in range(count))


def test_batches_of_the_cloud_evaluation():
    dataset = Dataset(images(11), ())
    batches = dataset.batches(2, (4, 8, 12, 16))
    assert [len(batch.images) for batch in batches] == [2, 2, 2, 2, 2, 1]
    assert [batch.epsilon for batch in batches] == [4, 8, 12, 16, 4, 8]
    assert [batch.name for batch in batches[:2]] == ["batch_000", "batch_001"]
    assert [image.image_id for image in batches[5].images] == ["i10"]
    assert {batch.epsilon for batch in dataset.batches(100, (16,))} == {16}
    with pytest.raises(ParameterError, match="batch_size must be >= 1"):
        dataset.batches(0, (16,))


# ------------------------------------------------------------------------ clipping


def test_clipping_is_the_toolkits_uint8_clip():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    clean[0, 0] = (0, 255, 3)
    adversarial = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    adversarial[0, 0] = (255, 0, 0)
    for epsilon in (0, 4, 16, 255):
        wide = clean.astype("int32")
        low = np.clip(wide - epsilon, 0, 255).astype("uint8")
        high = np.clip(wide + epsilon, 0, 255).astype("uint8")
        clipped = clip_to_ball(adversarial, clean, epsilon)
        assert clipped.dtype == np.uint8
        np.testing.assert_array_equal(clipped, np.clip(adversarial, low, high))
        assert np.abs(clipped.astype(int) - clean).max() <= epsilon
    assert clip_to_ball(adversarial, clean, 4)[0, 0].tolist() == [4, 251, 0]
    assert distances(clean, clean) == (0.0, 0.0)
    moved = clean.copy()
    moved[0, 0, 2] += 3
    moved[1, 1, 1] = clean[1, 1, 1] + 4 if clean[1, 1, 1] < 250 else clean[1, 1, 1] - 4
    assert distances(clean, moved) == (4.0, 5.0)


def toy_batch(tmp_path, count=4, epsilon=8):
    folder = tmp_path / "clean"
    folder.mkdir()
    entries = []
    for k in range(count):
        path = folder / f"img{k}.png"
        Image.fromarray(toy_pixels(k)).save(path)
        entries.append(DatasetImage(f"img{k}", path, k + 1, 1, sha256_file(path)))
    return Batch(0, epsilon, tuple(entries))


def test_reading_an_attacks_outputs(tmp_path):
    batch = toy_batch(tmp_path, count=5)
    out = tmp_path / "out"
    out.mkdir()
    bright = np.full((4, 4, 3), 255, dtype=np.uint8)
    Image.fromarray(bright).save(out / "img0.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "img0.jpg")  # the PNG wins
    Image.fromarray(bright).save(out / "img1.jpg", quality=100)
    Image.fromarray(np.dstack([bright, bright[..., :1]])).save(out / "img2.png")  # RGBA
    Image.fromarray(np.full((8, 6, 3), 255, np.uint8)).save(out / "img3.png")  # resized
    (out / "img4.png").write_bytes(b"not a png")
    (out / "stranger.png").write_bytes(b"")
    (out / "log.txt").write_text("")
    clipped = tmp_path / "clipped"
    clipped.mkdir()
    store = Store(tmp_path / "store")
    result = clip_outputs(out, batch, clipped, store)
    assert sorted(result.images) == ["img0", "img1", "img2", "img3"]
    assert result.missing == ["img4"]
    assert list(result.unreadable) == ["img4.png"]
    assert result.resized == {"img3": [6, 8]}
    assert result.ignored == ["img0.jpg", "log.txt", "stranger.png"]
    for k in range(4):
        pixels = np.asarray(Image.open(clipped / f"img{k}.png"))
        np.testing.assert_array_equal(pixels, np.minimum(toy_pixels(k).astype(int) + 8, 255))
        assert result.images[f"img{k}"].digest == sha256_file(clipped / f"img{k}.png")
        assert result.images[f"img{k}"].linf == 8.0
        assert store.read(result.images[f"img{k}"].digest) == (clipped / f"img{k}.png").read_bytes()
    assert clip_outputs(tmp_path / "absent", batch, clipped, store).missing == [
        f"img{k}" for k in range(5)
    ]


def test_reading_a_defense_result_file_as_the_toolkit(tmp_path):
    path = tmp_path / "result.csv"
    path.write_text(
        textwrap.dedent(
            """\
            ImageId,Label
            a.png,3
            b.jpg,4
            c,5

            d.png
            e.png,x
            a.png,7
            zzz.png,1
            c.png,1.5
            "e.png",9
            """
        )
    )
    result = read_defense_output(path, {"a", "b", "c", "e"})
    assert result.labels == {"a": 7, "b": 4, "c": 5, "e": 9}
    assert result.malformed_rows == 4  # the header, d.png, e.png,x and c.png,1.5
    assert result.unknown_names == ["zzz"]
    assert result.wrote_file
    assert not read_defense_output(tmp_path / "absent.csv", {"a"}).wrote_file


# -------------------------------------------------------------------- submissions


def submission(folder, metadata, entry="run.sh", mode=0o755):
    folder.mkdir(parents=True)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    (folder / "metadata.json").write_text(text)
    if entry:
        (folder / entry).write_text("#!/bin/sh\n")
        (folder / entry).chmod(mode)
    return folder


@pytest.mark.parametrize(
    ("metadata", "entry", "mode", "message"),
    [
        ("{", "run.sh", 0o755, "metadata.json is not valid JSON: Expecting property name"),
        ("[1]", "run.sh", 0o755, "metadata.json must hold a JSON object, not list"),
        (
            {"entry_point": "run.sh"},
            "run.sh",
            0o755,
            "type must be one of attack, targeted_attack, defense (no such field)",
        ),
        ({"type": "defence", "entry_point": "run.sh"}, "run.sh", 0o755, "(got 'defence')"),
        ({"type": "defense"}, "run.sh", 0o755, "entry_point must be a non-empty string"),
        ({"type": "defense", "entry_point": 3}, "run.sh", 0o755, "(got 3)"),
        ({"type": "defense", "entry_point": "/bin/sh"}, None, 0, "must name a file inside"),
        ({"type": "defense", "entry_point": "../x.sh"}, None, 0, "must name a file inside"),
        (
            {"type": "defense", "entry_point": "go.sh"},
            "run.sh",
            0o755,
            "entry point go.sh is not a file of the folder",
        ),
        ({"type": "defense", "entry_point": "run.sh"}, "run.sh", 0o644, "is not executable"),
        (
            {"type": "defense", "entry_point": "run.sh", "container": 7},
            "run.sh",
            0o755,
            "container must be a non-empty string (got 7)",
        ),
    ],
)
def test_bad_metadata_is_skipped_with_the_reason(tmp_path, metadata, entry, mode, message):
    submission(tmp_path / "subs" / "bad", metadata, entry, mode)
    submission(tmp_path / "subs" / "good", {"type": "defense", "entry_point": "run.sh"})
    found, skipped = discover(tmp_path / "subs", "defense", parameter="defenses_dir", docker=False)
    assert [s.name for s in found] == ["good"]
    assert list(skipped) == [str(tmp_path / "subs" / "bad")]
    assert message in skipped[str(tmp_path / "subs" / "bad")]


def test_discovery_by_type(tmp_path):
    subs = tmp_path / "subs"
    submission(subs / "b", {"type": "attack", "entry_point": "run.sh", "container": "c"})
    submission(
        subs / "a",
        {"type": "attack", "entry_point": "run.sh", "container": "c", "container_gpu": "g"},
    )
    submission(subs / "t", {"type": "targeted_attack", "entry_point": "run.sh"})
    (subs / "empty").mkdir()
    (subs / "file").write_text("")
    found, skipped = discover(subs, "attack", parameter="attacks_dir", docker=True)
    assert [(s.name, s.image(False), s.image(True)) for s in found] == [
        ("a", "c", "g"),
        ("b", "c", "c"),
    ]
    assert "container must be a non-empty string" in skipped[str(subs / "t")]
    assert read_submission(subs / "t", docker=False).targeted
    with pytest.raises(ParameterError) as raised:
        discover(tmp_path / "nothing", "attack", parameter="attacks_dir", docker=False)
    assert in_flags(raised.value) == f"--attacks_dir {tmp_path / 'nothing'} is not a directory"


# ------------------------------------------------------------------------- dataset


def test_dataset_ids_without_files_are_left_out(tmp_path):
    folder, metadata = make_dataset(tmp_path, count=3)
    (folder / "img1.png").unlink()
    (folder / "notes.txt").write_text("")
    dataset = read_dataset(folder, metadata)
    assert [image.image_id for image in dataset.images] == ["img0", "img2"]
    assert [(i.true_label, i.target_class) for i in dataset.images] == [(1, 2), (3, 1)]
    assert dataset.ids_without_files == ("img1",)


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (
            None,
            "ImageId,URL,TrueLabel",
            "--dataset_metadata {metadata} lacks the column(s) "
            "TargetClass; expected the NIPS 2017 dataset CSV (ImageId,URL,x1",
        ),
        (None, "filename,label", "lacks the column(s) ImageId, TrueLabel, TargetClass"),
        (
            [("img0", 1, 2), ("img1", 1001, 2)],
            None,
            "--dataset_metadata: label file {metadata}: "
            "line 3: label 1001 of img1.png is outside 1..1000",
        ),
        ([("img0", 1, 0), ("img1", 2, 3)], None, "line 2: label 0 of img0.png is outside 1..1000"),
        ([("img0", 1, 2), ("img1", "two", 3)], None, "label 'two' of img1.png is not an integer"),
        ([("img0", 1, 2)], None, "has no label for 1 image(s): img1.png"),
    ],
)
def test_bad_dataset_metadata(tmp_path, rows, header, message):
    folder, metadata = make_dataset(tmp_path, count=2)
    if header:
        metadata.write_text(f"{header}\nimg0,x,1\nimg1,x,2\n")
    else:
        write_metadata(metadata, rows)
    with pytest.raises(ParameterError) as raised:
        read_dataset(folder, metadata)
    assert message.format(metadata=metadata) in in_flags(raised.value)


def test_bad_dataset_folder(tmp_path):
    folder, metadata = make_dataset(tmp_path, count=2)
    (folder / "img1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ParameterError, match=r"1 PNG\(s\) cannot be read: img1.png \("):
        read_dataset(folder, metadata)
    for png in folder.iterdir():
        png.unlink()
    with pytest.raises(ParameterError) as raised:
        read_dataset(folder, metadata)
    assert (
        in_flags(raised.value) == f"--dataset_dir {folder} holds no PNG (<ImageId>.png) to attack"
    )
    with pytest.raises(ParameterError, match="is not a directory"):
        read_dataset(tmp_path / "absent", metadata)
    with pytest.raises(ParameterError, match="cannot be read: No such file"):
        read_dataset(folder, tmp_path / "absent.csv")


# ------------------------------------------------------------------------ runner


def run_shell(tmp_path, script, time_limit=None, grace_period=0.5):
    invocation = runner.Invocation(("sh", "-c", script), tmp_path)
    return runner.run(
        invocation,
        time_limit=time_limit,
        grace_period=grace_period,
        log_dir=tmp_path,
        ledger_dir=tmp_path,
    )


def test_runner_outcomes(tmp_path):
    ok = run_shell(tmp_path, "echo out; echo fine >&2")
    assert (ok.status, ok.returncode, ok.reason) == ("ok", 0, None)
    assert (tmp_path / "stdout.log").read_text() == "out\n"
    lines = "; ".join(f"echo line{k} >&2" for k in range(15))
    failed = run_shell(tmp_path, f"{lines}; exit 4")
    assert (failed.status, failed.returncode) == ("failed", 4)
    assert failed.stderr_tail.splitlines() == [f"line{k}" for k in range(5, 15)]
    assert failed.describe() == "exit status 4; stderr ends: line14"
    killed = run_shell(tmp_path, "kill -SEGV $$")
    assert (killed.status, killed.reason) == ("failed", "killed by SIGSEGV")
    timeout = run_shell(tmp_path, "sleep 30", time_limit=0.3)
    assert (timeout.status, timeout.reason) == (
        "timeout",
        "stopped at the 0.3 s time limit (SIGTERM)",
    )
    assert 0.3 <= timeout.seconds < 5
    missing = runner.run(
        runner.Invocation((str(tmp_path / "absent"),), tmp_path),
        time_limit=None,
        grace_period=1,
        log_dir=tmp_path,
        ledger_dir=tmp_path,
    )
    assert missing.status == "failed"
    assert missing.reason == f"cannot start {tmp_path / 'absent'}: No such file or directory"
    assert runner.Outcome.from_json(failed.to_json()) == failed


def test_runner_kills_the_whole_group(tmp_path):
    pid_file = tmp_path / "pid"
    outcome = run_shell(tmp_path, f"sleep 60 & echo $! > {pid_file}; exit 0")
    assert outcome.status == "ok"
    assert not alive(int(pid_file.read_text()))
    stubborn = run_shell(tmp_path, "trap '' TERM; sleep 60", time_limit=0.2, grace_period=0.2)
    assert stubborn.reason == "stopped at the 0.2 s time limit (SIGKILL after a 0.2 s grace period)"


# --------------------------------------------------------------------- pool, layout


def test_pool_is_deterministic_and_anonymous(tmp_path):
    batch = toy_batch(tmp_path, count=3)
    produced = [
        (attack, attack == "t", image.image_id, image.path, f"{attack}{image.image_id}")
        for attack in ("b", "a", "t")
        for image in batch.images
    ]
    parts = pool(batch, produced, 4)
    assert [len(part) for part in parts] == [4, 4, 1]
    names = [image.name for part in parts for image in part]
    assert names == [f"ADVBATCH000_IMG{n:06d}.png" for n in range(9)]
    origins = [(image.attack, image.image_id) for part in parts for image in part]
    assert sorted(origins) == sorted((e[0], e[2]) for e in produced)
    assert origins != sorted(origins)  # shuffled
    assert pool(batch, list(reversed(produced)), 4) == parts


def test_place_files_rebuilds_a_changed_folder_from_the_store(tmp_path):
    store = Store(tmp_path / "store")
    source = tmp_path / "a.png"
    source.write_bytes(b"data")
    files = {"a.png": sha256_file(source), "t.csv": store.put(b"table")}
    folder = place_files(tmp_path / "in", files, store, {"a.png": [source]})
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "t.csv"]
    assert (folder / "a.png").stat().st_mode & 0o777 == 0o444
    before = (folder / "a.png").stat().st_ino
    place_files(folder, files, store)
    assert (folder / "a.png").stat().st_ino == before  # kept
    (folder / "extra").write_text("")
    (folder / "t.csv").chmod(0o644)
    (folder / "t.csv").write_bytes(b"forged")
    assert changed_files(folder, files) == ["extra", "t.csv"]
    place_files(folder, files, store)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "t.csv"]
    assert (folder / "t.csv").read_bytes() == b"table"


def test_the_store_repairs_its_copies_and_refuses_when_none_is_intact(tmp_path):
    store = Store(tmp_path / "store")
    digest = store.put(b"clean")
    store.path(digest).write_bytes(b"tampered")
    spare = tmp_path / "spare"
    spare.write_bytes(b"clean")
    assert store.read(digest, [tmp_path / "absent", spare]) == b"clean"
    assert store.path(digest).read_bytes() == b"clean"  # repaired
    store.path(digest).write_bytes(b"tampered")
    spare.write_bytes(b"tampered too")
    with pytest.raises(TamperedError, match=r"img0.png .* was changed during the run"):
        store.read(digest, [spare], what="img0.png")


def test_one_run_at_a_time_per_intermediate_dir(tmp_path):
    layout = Layout(tmp_path / "intermediate")
    with (
        layout.locked(),
        pytest.raises(InputError, match="in use by another run_competition"),
        layout.locked(),
    ):
        pass
    with layout.locked():
        pass


# ------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def command():
    """The command's main() in this process (every case stops before running a piece)."""
    from tests.support.adversarial_helpers import command_module

    module = command_module("attacks.cli.run_competition")

    def run(*args) -> int:
        module.FLAGS.unparse_flags()
        return module.main(module.FLAGS(["run_competition", *map(str, args)]))

    yield run
    module.FLAGS.unparse_flags()


@pytest.fixture
def setup(tmp_path):
    dataset = make_dataset(tmp_path, count=2)
    return tmp_path, [
        f"--dataset_dir={dataset[0]}",
        f"--dataset_metadata={dataset[1]}",
        f"--intermediate_results_dir={tmp_path / 'intermediate'}",
        f"--output_dir={tmp_path / 'output'}",
        f"--attacks_dir={link_toys(tmp_path / 'attacks', 'noop')}",
        f"--defenses_dir={link_toys(tmp_path / 'defenses', 'decode')}",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset_dir": None}, "--dataset_dir required"),
        ({"attacks_dir": None}, "give --attacks_dir, --targeted_attacks_dir or both"),
        ({"epsilon": "big"}, "--epsilon must be an integer in 0..255 or 'cycle'"),
        (
            {"defenses_dir": "{root}/attacks"},
            "--defenses_dir {root}/attacks holds no usable defense",
        ),
        (
            {"attacks_dir": "{root}/defenses"},
            "--attacks_dir and --targeted_attacks_dir hold no usable attack",
        ),
        ({"dataset_metadata": "{root}/dataset/img0.png"}, "cannot be read"),
        ({"output_dir": "{root}/dataset.csv"}, "dataset.csv overlaps --dataset_metadata"),
        (
            {"intermediate_results_dir": "{root}"},
            "--intermediate_results_dir {root} overlaps --dataset_dir {root}/dataset",
        ),
        (
            {"intermediate_results_dir": "{root}/dataset/work"},
            "--intermediate_results_dir {root}/dataset/work overlaps --dataset_dir",
        ),
        ({"output_dir": "{root}/attacks/noop"}, "overlaps the submission noop"),
        ({"output_dir": "{root}/attacks/new"}, "overlaps --attacks_dir {root}/attacks"),
        (
            {"time_limit": "nan"},
            "--time_limit must be a number of seconds in 0..86400 (0: no limit), got nan",
        ),
        ({"time_limit": "inf"}, "--time_limit must be a number of seconds"),
        ({"grace_period": "nan"}, "--grace_period must be a number of seconds in 0..86400"),
        ({"grace_period": "1e300"}, "--grace_period must be a number of seconds"),
        ({"docker_cpus": "nan"}, "--docker_cpus must be a number of CPUs in (0, 1024], got nan"),
        ({"docker_memory": "lots"}, "--docker_memory must be a size as docker run -m takes it"),
    ],
)
def test_bad_input_exits_2_before_anything_runs(command, setup, capsys, change, message):
    root, args = setup
    flags = {arg.split("=", 1)[0][2:]: arg.split("=", 1)[1] for arg in args}
    for name, value in change.items():
        if value is None:
            flags.pop(name)
        else:
            flags[name] = value.format(root=root)
    assert command(*(f"--{name}={value}" for name, value in flags.items())) == 2
    assert message.format(root=root) in capsys.readouterr().err
    assert not (root / "intermediate").exists() or not any((root / "intermediate").iterdir())


def test_a_read_only_result_file_is_refused_before_running(command, setup, capsys):
    root, args = setup
    (root / "output").mkdir()
    (root / "output" / "scores.json").write_text("{}")
    (root / "output" / "scores.json").chmod(0o444)
    assert command(*args) == 2
    assert "scores.json is read-only" in capsys.readouterr().err
    assert not (root / "intermediate" / "attacks_output").exists()


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--runtime=podman", "flag --runtime=podman: value should be one of <native|docker>"),
        ("--time_limit=-1", "flag --time_limit=-1: -1.0 is not a non-negative number"),
        ("--batch_size=0", "flag --batch_size=0: 0 is not a positive integer"),
    ],
)
def test_bad_flag_values_exit_2_with_one_message(flag, message):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_competition.py"), flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("run_competition: error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_harness_needs_no_tensorflow():
    code = (
        "import sys, attacks.cli.run_competition, attacks.competition.harness; "
        "assert 'tensorflow' not in sys.modules, 'imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_help_lists_the_toolkits_flags():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_competition.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for flag in (
        "attacks_dir",
        "targeted_attacks_dir",
        "defenses_dir",
        "dataset_dir",
        "dataset_metadata",
        "intermediate_results_dir",
        "output_dir",
        "epsilon",
        "gpu",
        "save_all_classification",
        "runtime",
        "time_limit",
    ):
        assert re.search(rf"--(\[no\])?{flag}:", result.stdout), flag
