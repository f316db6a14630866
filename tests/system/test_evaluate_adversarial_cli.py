"""The evaluate_adversarial command: judging a generated adversarial set (a subprocess), and
bad input (main() in process: it stops before any model is loaded)."""

import json
import re

import pytest

from tests.support.adversarial_helpers import in_process, read_stats, run_evaluate, stand_in_set


@pytest.mark.slow
@pytest.mark.xdist_group("fgsm_run")
def test_evaluate_judges_the_float_copies_and_says_so(fgsm_run, tmp_path):
    _, output, checkpoint = fgsm_run
    result_file = tmp_path / "result.json"
    result = run_evaluate(
        f"--adversarial_dir={output}",
        "--source=float",
        f"--checkpoint_path={checkpoint}",
        "--runs=1",
        "--seed=0",
        f"--output_file={result_file}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("float (the float adversarials before rounding")
    judged = json.loads(result_file.read_text())
    assert (judged["source"], judged["images"]) == ("float", 3)
    assert (judged["model"], judged["scenario"]) == ("ens_adv_inception_resnet_v2", "vanilla")
    # The vanilla target model is the model stats.csv judged the float adversarials on.
    rows = read_stats(output).values()
    correct = sum(row["prediction_float"] == row["label"] for row in rows)
    assert judged["target_accuracy"] == pytest.approx(correct / 3)
    assert 0 <= judged["defense_accuracy"] <= 1


@pytest.fixture
def evaluate(capsys):
    """evaluate_adversarial on bad input, (exit status, stderr): main() in this process, but a
    flag value absl refuses in a subprocess, where the program's runner reports it."""
    from absl import flags

    main = in_process("attacks.cli.evaluate_adversarial", capsys)

    def run(*args) -> tuple[int, str]:
        try:
            return main(*args)
        except flags.Error:
            result = run_evaluate(*args)
            return result.returncode, result.stderr

    return run


@pytest.fixture
def judged_set(tmp_path):
    """An output directory of a stand-in fgsm run on two images, without float copies."""
    return stand_in_set(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--adversarial_dir is required"),
        (["--adversarial_dir={made}", "--scenario=bogus"], "unknown scenario 'bogus'"),
        (["--adversarial_dir={made}", "--checkpoint_path={made}/x.ckpt"], "x.ckpt"),
        (["--adversarial_dir={made}", "--output_file={made}"], "is a directory"),
        (["--adversarial_dir={made}", "--output_file={made}/no/x.json"], "does not exist"),
        (["--adversarial_dir={made}", "--runs=0"], "--runs=0"),
        (["--adversarial_dir={made}", "--source=float"], r"no float copy .*--save_float"),
    ],
)
def test_evaluate_bad_input_exits_2(evaluate, judged_set, args, message):
    code, stderr = evaluate(*(arg.format(made=judged_set) for arg in args))
    assert code == 2
    assert re.search(message, stderr), stderr
