"""Multi-device runs: MirroredStrategy labels equal the one-device labels for the same seed.

Logical devices must be configured before TensorFlow starts, so the comparison runs
in a fresh interpreter that splits the CPU into two logical devices (the GPU tests
do the same with two logical GPUs).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMPARE = textwrap.dedent(
    """
    import numpy as np
    import keras
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from tests.support.tiny_models import tiny_classifier

    from defense.config import DefenseConfig
    from defense.distribute import mirrored_strategy
    from defense.ensemble import RandomizedEnsemble

    def tiny_model():
        return tiny_classifier(11, kernel=3, strides=2, input_size=32)

    model = tiny_model()
    strategy = mirrored_strategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored_model = tiny_model()
    mirrored_model.set_weights(model.get_weights())
    images = np.random.default_rng(0).uniform(-1, 1, (5, 28, 28, 3)).astype(np.float32)
    cases = 0
    for per_image in (False, True):
        config = DefenseConfig(
            name="tiny", low=26, high=33, out_size=32, num_iterations=7, per_image=per_image
        )
        for chunk_size in (1, 4, 9, 35, 100):
            for seed in (0, 1):
                one = RandomizedEnsemble(model, config, seed=seed, chunk_size=chunk_size)
                two = RandomizedEnsemble(
                    mirrored_model, config, seed=seed, chunk_size=chunk_size, strategy=strategy
                )
                for batch in (images, images[:3]):
                    expected, got = one.scores(batch), two.scores(batch)
                    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
                    assert (np.argmax(got, 1) == np.argmax(expected, 1)).all()
                    cases += 1
    print("cases", cases)
    """
)


@pytest.mark.slow
def test_mirrored_labels_equal_one_device_labels_on_two_logical_cpus():
    result = subprocess.run(  # from the repository root, where tests.support lives
        [sys.executable, "-c", COMPARE],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cases 40" in result.stdout


def test_mirrored_strategy_without_a_gpu_is_a_clear_error():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("checks the no-GPU error; with a GPU, tests/system/test_gpu.py runs mirrored")
    from defense.distribute import NoGPUError, mirrored_strategy

    with pytest.raises(NoGPUError, match="sees no GPU"):
        mirrored_strategy()
