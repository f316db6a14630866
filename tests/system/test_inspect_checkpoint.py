"""inspect_checkpoint.py: lists variables, names the registry model, explains mismatches
(subprocesses); unreadable checkpoints are refused (main() in process)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.adversarial_helpers import in_process
from tests.support.slim_reference.checkpoint_writer import write_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "inspect_checkpoint.py"

pytestmark = pytest.mark.slow


def inspect(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def main(capsys):
    """inspect_checkpoint's main() in this process: (exit status, stderr)."""
    return in_process("defense.cli.inspect_checkpoint", capsys)


def test_matching_checkpoint_with_bookkeeping(irv2_values, tmp_path):
    name = "InceptionResnetV2/Conv2d_1a_3x3/weights"
    values = {
        **irv2_values,
        "global_step": np.array(5, np.int64),
        f"{name}/ExponentialMovingAverage": irv2_values[name],
    }
    result = inspect(write_checkpoint(tmp_path / "model.ckpt", values))
    assert result.returncode == 0, result.stderr
    assert "908 model variables, 59,244,594 parameters, 2 bookkeeping entries" in result.stdout
    assert (
        "fits registry model(s): ens_adv_inception_resnet_v2, inception_resnet_v2" in result.stdout
    )
    assert f"{name}\t[3, 3, 3, 32]\tfloat32" in result.stdout
    assert "global_step\t[]\tint64  (training bookkeeping, ignored)" in result.stdout


def test_checkpoint_of_another_net(irv2_values, tmp_path):
    values = dict(irv2_values)
    del values["InceptionResnetV2/Logits/Logits/biases"]
    values["InceptionV3/Logits/Conv2d_1c_1x1/biases"] = np.zeros(1001, np.float32)
    result = inspect(write_checkpoint(tmp_path / "other.ckpt", values), "--nolist_variables")
    assert result.returncode == 1
    assert "fits no registry model; closest: ens_adv_inception_resnet_v2" in result.stdout
    assert "InceptionResnetV2/Logits/Logits/biases" in result.stdout
    assert "InceptionV3/Logits/Conv2d_1c_1x1/biases" in result.stdout


def test_truncated_data_file(main, irv2_checkpoint, tmp_path):
    prefix = tmp_path / "cut.ckpt"
    Path(f"{prefix}.index").write_bytes(Path(f"{irv2_checkpoint}.index").read_bytes())
    data = Path(f"{irv2_checkpoint}.data-00000-of-00001").read_bytes()
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    code, stderr = main(prefix)
    assert code == 2
    assert "truncated or corrupt" in stderr


def test_not_a_checkpoint(main, tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00garbage" * 100)
    code, stderr = main(junk)
    assert code == 2
    assert "not a readable TensorFlow checkpoint" in stderr
    code, stderr = main(tmp_path / "missing.ckpt")
    assert code == 2 and "no checkpoint at" in stderr
