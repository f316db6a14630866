"""reproduce_paper: the results file (resume, other settings refused), the command's bad
input, and end to end on the trained digits CNN: Tables 2 and 4 in the paper's layout, an
interrupted run resumed without recomputing its finished cells, and the plots.

The command runs the digits CNN through its model factory hook:
`--model_factory=tests.system.test_reproduce_paper:digits_models` (this module, on PYTHONPATH),
with the weights the test saved named by $REPRODUCE_PAPER_DIGITS_WEIGHTS.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attacks.paper.cells import Cell, ResultsFile, SettingsMismatch, pending
from defense.common.errors import InputError

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_ENV = "REPRODUCE_PAPER_DIGITS_WEIGHTS"
FACTORY = "--model_factory=tests.system.test_reproduce_paper:digits_models"
# The digits run's shortened schedules (recorded with every cell): C&W with few, large
# steps, DeepFool with fewer steps and candidates, EOT-PGD and APGD-EOT with fewer samples
# (APGD-EOT: and steps) and a budget this small CNN notices.
OVERRIDES = [
    "--override=cw.max_iterations=10",
    "--override=cw.binary_search_steps=2",
    "--override=cw.learning_rate=0.1",
    "--override=cw.initial_const=10",
    "--override=deepfool.max_iter=10",
    "--override=deepfool.nb_candidate=3",
    "--override=adaptive.samples=8",
    "--override=adaptive.epsilon=24",
    "--override=adaptive-apgd.samples=8",
    "--override=adaptive-apgd.epsilon=24",
    "--override=adaptive-apgd.n_iter=10",
]
ROW_LABELS = [
    "FGSM-2",
    "FGSM-5",
    "FGSM-10",
    "DeepFool",
    "C&W",
    "EOT-PGD-24 (adaptive)",
    "APGD-EOT-24 (adaptive)",
]


def digits_models():
    """The model factory: the digits CNN with the weights in $REPRODUCE_PAPER_DIGITS_WEIGHTS
    (unset: untrained, for the checks made before any model runs)."""
    from attacks.paper.models import ModelEntry
    from tests.support.digits import DEFENSE, INPUT_SIZE, NUM_CLASSES, OUT_SIZE, build_model

    path = os.environ.get(WEIGHTS_ENV)

    def load():
        model = build_model()
        if path:
            model.load_weights(path)
        return model

    weights = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else "none"
    entry = ModelEntry(
        name="digits",
        load=load,
        weights=weights,
        input_size=INPUT_SIZE,
        out_size=OUT_SIZE,
        config=DEFENSE.replace(name="digits-paper", num_iterations=1),
        class_names=[str(digit) for digit in range(NUM_CLASSES)],
        title="digits CNN",
    )
    return {"digits": entry}


def command(*args):
    return [sys.executable, str(REPO / "scripts" / "reproduce_paper.py"), "--noprogress", *args]


def environment(weights=None):
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop(WEIGHTS_ENV, None)
    if weights is not None:
        env[WEIGHTS_ENV] = str(weights)
    return env


def reproduce(*args, weights=None, timeout=900):
    return subprocess.run(
        command(*args), capture_output=True, text=True, env=environment(weights), timeout=timeout
    )


def cell(row="cw", images="sha256:a", **settings):
    return Cell(2, "digits", row, "float", images, 16, {"attack": row, "params": settings})


RESULT = {"target": 0.25, "defense": 0.75, "l2": 3.0, "linf": 1.0, "seconds": 2.0}


def test_the_results_file_resumes_and_keeps_other_image_sets(tmp_path):
    path = tmp_path / "results.jsonl"
    done, todo = cell("cw", max_iterations=10), cell("deepfool")
    ResultsFile(path).add(done, RESULT)
    results = ResultsFile(path)
    assert results.result(done)["target"] == 0.25 and results.result(todo) is None
    assert pending([done, todo], results) == [todo]
    results.check([done, todo])
    # The same cell on other images (another --limit) is another cell, not a conflict.
    elsewhere = cell("cw", images="sha256:b", max_iterations=10)
    results.check([elsewhere])
    assert pending([elsewhere], results) == [elsewhere]
    results.add(todo, RESULT)
    assert len(path.read_text().splitlines()) == 2
    assert json.loads(path.read_text().splitlines()[0])["settings"]["params"] == {
        "max_iterations": 10
    }


def test_results_of_other_settings_are_refused_not_mixed(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsFile(path).add(cell("cw", max_iterations=10), RESULT)
    before = path.read_text()
    with pytest.raises(SettingsMismatch) as caught:
        ResultsFile(path).check([cell("cw", images="sha256:b", max_iterations=1000)])
    message = str(caught.value)
    assert f"results file {path} holds results made with other settings" in message
    assert (
        "table 2 cw on digits (float): params.max_iterations: 10 in the file, 1000 now" in message
    )
    assert "Give another output directory" in message
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({**cell().__dict__, "count": 1, "target": 0.5}), "defense is not a number"),
    ],
)
def test_a_damaged_results_file_is_refused(tmp_path, line, problem):
    path = tmp_path / "results.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match=f"line 1 is not a cell result \\({problem}"):
        ResultsFile(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table=7"], "--table: the paper has no table '7'; choose among 1, 2, 3, 4, 5, 6"),
        (["--table=2", "--all"], "give --table or --all, not both"),
        ([], "no --table given"),
        (["--table=2", "--attacks=bim"], "--attacks: unknown row(s) 'bim'"),
        (["--table=2", "--override=cw.steps=3"], "--override: 'cw.steps=3': cw takes confidence"),
        (["--table=2", "--override=cw"], "--override: 'cw' is not ROW.PARAM=VALUE"),
        (["--table=2", "--seed=-1"], "--seed must be in 0..4294967295, got -1"),
        (["--table=2", "--subset_seed=-1"], "--subset_seed must be in 0..4294967295, got -1"),
    ],
)
def test_bad_flags_exit_2_before_anything_runs(tmp_path, args, message):
    result = reproduce(f"--dataset_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("reproduce_paper: error: "), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def write_dataset(folder, pixels, labels):
    folder.mkdir()
    lines = []
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        Image.fromarray(image).save(folder / f"digit{i:02d}.png")
        lines.append(f"digit{i:02d}.png,{label}\n")
    (folder / "labels.csv").write_text("".join(lines))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("labels", "extra", "message"),
    [
        ("digit00.png,3\n", [FACTORY], "has no label for 1 image(s): digit01.png"),
        ("digit00.png,3\ndigit01.png,12\n", [FACTORY], "label 12 of digit01.png is outside 0..9"),
        (None, ["--checkpoint_dir={tmp}/none"], "download_checkpoints inception_v3"),
    ],
)
def test_bad_datasets_and_checkpoints_exit_2(tmp_path, labels, extra, message):
    gray = np.full((2, 32, 32, 3), 128, np.uint8)
    dataset = write_dataset(tmp_path / "dataset", gray, [3, 4])
    if labels is not None:
        (dataset / "labels.csv").write_text(labels)
    result = reproduce(
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={tmp_path / 'out'}",
        "--table=2",
        *(arg.format(tmp=tmp_path) for arg in extra),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def truncate(path):
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(path)
    path.write_bytes(path.read_bytes()[:400])


def replace_with_fifo(path):
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def link_to(device):
    def link(path):
        path.unlink(missing_ok=True)
        path.symlink_to(device)

    return link


UNUSABLE = (
    "1 image(s) of {dataset} are unusable (the images must be 32x32 PNGs, the models' "
    "input size):\n  "
)
# Each case: what is damaged (an image of the dataset, the results file, or nothing), how,
# the extra flags and the error. Nothing may be computed: no model is even loaded.
BAD_INPUTS = {
    "image of another size": (
        "image",
        lambda path: Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(path),
        [],
        UNUSABLE + "digit01.png: is 64x48, not 32x32",
    ),
    "truncated image": ("image", truncate, [], UNUSABLE + "digit01.png: corrupt PNG"),
    "image as a FIFO": (
        "image",
        replace_with_fifo,
        [],
        UNUSABLE + "digit01.png: not a regular file (a FIFO)",
    ),
    "image linked to /dev/zero": (
        "image",
        link_to("/dev/zero"),
        [],
        UNUSABLE + "digit01.png: not a regular file (a character device)",
    ),
    "results file as a FIFO": (
        "results",
        replace_with_fifo,
        [],
        "output path {results} is a FIFO, not a regular file",
    ),
    "results file linked to /dev/null": (
        "results",
        link_to("/dev/null"),
        [],
        "output path {results} is a character device, not a regular file",
    ),
    "more DeepFool candidates than classes": (
        None,
        None,
        ["--override=deepfool.nb_candidate=50"],
        "--override=deepfool.nb_candidate=... must be at most the 10 classes of model 'digits', "
        "got 50",
    ),
    "a bad override value": (
        None,
        None,
        ["--override=fgsm-2.epsilon=-1"],
        "--override=fgsm-2.epsilon=... must be in (0, 255] pixel units, got -1.0",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_are_refused_before_any_cell(tmp_path, case):
    damaged, damage, extra, message = BAD_INPUTS[case]
    gray = np.full((2, 32, 32, 3), 128, np.uint8)
    dataset = write_dataset(tmp_path / "dataset", gray, [3, 4])
    output = tmp_path / "out"
    output.mkdir()
    results = output / "results.jsonl"
    if damage is not None:
        damage(dataset / "digit01.png" if damaged == "image" else results)
    result = reproduce(
        FACTORY,
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={output}",
        "--table=2",
        "--attacks=fgsm-2,deepfool",
        "--runs=1",
        *extra,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    expected = message.format(dataset=dataset, results=results)
    assert f"reproduce_paper: error: {expected}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "--epsilon" not in result.stderr
    assert "loading digits" not in result.stderr and "cannot write" not in result.stderr
    if damaged != "results":
        assert not results.exists()


@pytest.mark.slow
def test_a_grayscale_image_is_converted_with_a_warning(tmp_path):
    pixels = np.full((2, 32, 32, 3), 128, np.uint8)
    dataset = write_dataset(tmp_path / "dataset", pixels, [3, 4])
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(dataset / "digit01.png")
    result = reproduce(
        FACTORY,
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={tmp_path / 'out'}",
        "--table=1",
        "--runs=1",
        "--nofigure",
    )
    assert result.returncode == 0, result.stderr
    assert "digit01.png (converted L to RGB)" in result.stderr
    assert len(stored(tmp_path / "out" / "results.jsonl")) == 1


def stored(path):
    return path.read_text().splitlines() if path.exists() else []


def check_png(path):
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 5000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) > 200 and np.asarray(image.convert("L")).std() > 5


def check_pdf(path):
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:] and len(data) > 5000


# Images per table of the resume test: enough for every row, few for CI's time.
IMAGES = 8


@pytest.mark.slow
def test_tables_2_and_4_on_digits_resume_after_an_interruption(digits, digits_correct, tmp_path):
    weights = tmp_path / "digits.weights.h5"
    digits.model.save_weights(weights)
    images, labels = (a[: IMAGES + 4] for a in digits_correct)
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    dataset = write_dataset(tmp_path / "dataset", pixels, labels)
    output = tmp_path / "out"
    results = output / "results.jsonl"
    args = [
        FACTORY,
        f"--dataset_dir={dataset}",
        f"--labels_file={dataset / 'labels.csv'}",
        f"--output_dir={output}",
        "--table=2,4",
        f"--limit={IMAGES}",
        f"--subset_size={IMAGES}",
        *OVERRIDES,
    ]
    # An interrupted run (SIGTERM once three cells are stored) keeps what it finished.
    process = subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(weights),
    )
    deadline = time.monotonic() + 600
    while len(stored(results)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert f"interrupted; what was finished is kept in {results}" in stderr
    finished = stored(results)
    assert 3 <= len(finished) < 14

    # The rerun computes only the missing cells and leaves the finished ones as they were.
    result = reproduce(*args, weights=weights)
    assert result.returncode == 0, result.stderr
    lines = stored(results)
    assert len(lines) == 14 and lines[: len(finished)] == finished
    expected = (
        f"14 cell(s): {len(finished)} finished before (kept), {14 - len(finished)} to compute"
    )
    assert expected in result.stderr
    print("\n" + result.stdout)

    tables = result.stdout.split("Table 4: top-1 accuracy (%), ensemble-pattern attack")
    assert len(tables) == 2 and tables[0].startswith("Table 2: top-1 accuracy (%), vanilla attack")
    for text, paper_images in zip(tables, (5000, 500), strict=True):
        ours, paper = text.split(f"The paper's Table {2 if paper_images == 5000 else 4} (ImageNet")
        assert f"{IMAGES} images of the {'dataset' if paper_images == 5000 else 'subset'}" in ours
        assert "judged on float adversarials (before rounding to PNG)" in ours
        assert "settings not the paper's: cw.max_iterations=10" in ours
        for label in ROW_LABELS:
            row = next(line for line in ours.splitlines() if line.startswith(label + " "))
            values = [float(v) for v in row.split("|")[1:]]
            assert len(values) == 2 and all(0 <= v <= 100 for v in values), row
        assert f"{paper_images} images):" in paper and "Inception-v3" in paper
    assert (output / "tables.txt").read_text() == result.stdout
    for name in ("table2", "table4", "figure1"):
        check_png(output / "plots" / f"{name}.png")
        check_pdf(output / "plots" / f"{name}.pdf")
    records = [json.loads(line) for line in lines]
    cw = next(r for r in records if r["row"] == "cw" and r["table"] == 4)
    assert cw["settings"]["params"]["max_iterations"] == 10 and cw["count"] == IMAGES
    assert cw["settings"]["scenario"] == "ensemble_pattern"

    # A run with other settings is refused, and the results file is left as it was.
    other = [arg.replace("max_iterations=10", "max_iterations=11") for arg in args]
    refused = reproduce(*other, weights=weights)
    assert refused.returncode == 2, refused.stderr
    assert "holds results made with other settings" in refused.stderr
    assert "table 2 cw on digits (float): params.max_iterations: 10 in the file, 11 now" in (
        refused.stderr
    )
    assert stored(results) == lines
