"""The defense on a GPU: placement, agreement with the CPU, mixed precision, XLA, the
runner, and the multi-GPU path.

Every test is marked `gpu`: skipped where TensorFlow sees no GPU, an error with
`--check_gpu` (the GPU CI job, .github/workflows/gpu.yml). The network is
Inception-ResNet-v2 on the generated slim checkpoint (`irv2_checkpoint`); inputs are
smooth image-like PNG contents, on which its labels depend on the image.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from defense import models
from defense.common.images import read_image, to_model_input
from defense.config import DefenseConfig, load_config
from defense.ensemble import RandomizedEnsemble
from defense.patterns import apply_patterns, make_generator, sample_patterns
from defense.randomization import resize_and_pad
from tests.system.test_run_defense_cli import read_labels, smooth_image

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "scripts" / "run_defense.py"
MODEL = "inception_resnet_v2"
# Two logical GPUs of this size on the first physical one. A replica holds the float32
# weights (0.24 GB) and the activations of a 4-item chunk at 331 px (well under 1 GB).
LOGICAL_GPU_MEMORY_MB = 2048

pytestmark = pytest.mark.gpu

# Prologue of the multi-GPU subprocesses: logical devices can only be configured
# before TensorFlow initialises the GPU, so this runs first in a fresh interpreter.
SPLIT_FIRST_GPU = textwrap.dedent(
    f"""
    import sys
    import tensorflow as tf

    gpu = tf.config.list_physical_devices("GPU")[0]
    tf.config.set_logical_device_configuration(
        gpu, [tf.config.LogicalDeviceConfiguration(memory_limit={LOGICAL_GPU_MEMORY_MB})] * 2
    )
    """
)

# argv: checkpoint prefix, .npy of images. Prints one JSON line with both runs' results.
COMPARE_MIRRORED = SPLIT_FIRST_GPU + textwrap.dedent(
    """
    import json
    import numpy as np
    from defense import models
    from defense.config import load_config
    from defense.distribute import mirrored_strategy
    from defense.ensemble import RandomizedEnsemble

    checkpoint, images = sys.argv[1], np.load(sys.argv[2])
    config = load_config("challenge").replace(num_iterations=2)
    model = models.load("inception_resnet_v2", checkpoint)
    strategy = mirrored_strategy()
    with strategy.scope():
        mirrored_model = models.load("inception_resnet_v2", checkpoint)
    one = RandomizedEnsemble(model, config, seed=0, chunk_size=4).scores(images)
    many = RandomizedEnsemble(
        mirrored_model, config, seed=0, chunk_size=4, strategy=strategy
    ).scores(images)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "kind": type(strategy).__name__,
        "one": one.tolist(),
        "many": many.tolist(),
    }))
    """
)

# argv: the runner's flags. Runs scripts/run_defense.py as __main__ on two logical GPUs.
RUNNER_ON_TWO_LOGICAL_GPUS = SPLIT_FIRST_GPU + textwrap.dedent(
    f"""
    import runpy

    sys.argv = [{str(RUNNER)!r}, *sys.argv[1:]]
    runpy.run_path({str(RUNNER)!r}, run_name="__main__")
    """
)


def subprocess_env(*, logical_gpus: bool = False) -> dict[str, str]:
    """The environment of a child TensorFlow: its device log lines shown.

    With explicit per-device memory limits (logical GPUs) memory growth is not
    needed, and it is dropped so as not to mix the two allocator settings.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    if logical_gpus:
        env.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
    return env


def run_python(*args: str, logical_gpus: bool = False) -> subprocess.CompletedProcess:
    """Run the interpreter of this test session on `args` from the repository root."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=subprocess_env(logical_gpus=logical_gpus),
        timeout=900,
    )


def is_on_gpu(tensor: tf.Tensor) -> bool:
    """Whether an eager tensor lives in GPU memory (its device is .../device:GPU:N)."""
    return "/device:GPU:" in tensor.device


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """32 smooth images in [-1, 1], as the runner would feed them."""
    return to_model_input(np.stack([smooth_image(seed) for seed in range(32)]))


@pytest.fixture(scope="module")
def gpu_model(irv2_checkpoint: str):
    """Inception-ResNet-v2 on the generated checkpoint, float32, on the default device (GPU:0)."""
    return models.load(MODEL, irv2_checkpoint)


@pytest.fixture(scope="module")
def challenge_2() -> DefenseConfig:
    """The challenge config with 2 patterns per image: every code path, a fraction of the work."""
    return load_config("challenge").replace(num_iterations=2)


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four smooth 299x299 PNGs, the runner's input."""
    folder = tmp_path_factory.mktemp("gpu_pngs")
    for seed in range(4):
        Image.fromarray(smooth_image(seed)).save(folder / f"image_{seed}.png")
    return folder


def test_randomization_runs_on_the_gpu(images):
    generator = make_generator(0)
    assert is_on_gpu(generator.state)
    patterns = sample_patterns(generator, 4, low=310, high=331, out_size=331, flip_probability=0.5)
    randomized = apply_patterns(images[:4], patterns, out_size=331)
    assert randomized.shape == (4, 331, 331, 3) and is_on_gpu(randomized)
    assert is_on_gpu(resize_and_pad(images[:4], 320, 5, 6, method="bilinear"))


@pytest.mark.slow
def test_model_and_ensemble_run_on_the_gpu(gpu_model, images, challenge_2):
    outputs = gpu_model(images[:2], training=False)
    assert is_on_gpu(outputs["logits"]) and is_on_gpu(outputs["aux_logits"])
    # The ensemble returns NumPy, so look at GPU memory instead: its chunks must pass
    # through it. One 8-item chunk's network input alone is 8 x 331 x 331 x 3 float32.
    ensemble = RandomizedEnsemble(gpu_model, challenge_2, seed=0, chunk_size=8)
    tf.config.experimental.reset_memory_stats("GPU:0")
    before = tf.config.experimental.get_memory_info("GPU:0")["current"]
    ensemble.predict(images[:4])
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    assert peak - before >= 8 * 331 * 331 * 3 * 4


@pytest.mark.slow
def test_gpu_float32_logits_equal_cpu_logits(irv2_checkpoint, gpu_model, images):
    with tf.device("/CPU:0"):
        cpu_model = models.load(MODEL, irv2_checkpoint)
        cpu = cpu_model(images[:8], training=False)["logits"]
    gpu = gpu_model(images[:8], training=False)["logits"]
    assert "CPU" in cpu.device and is_on_gpu(gpu)
    cpu, gpu = cpu.numpy(), gpu.numpy()
    # TF32 is off (conftest), so both sides are true float32 and differ only by the
    # order of summation: cuDNN picks per layer among implicit-GEMM, FFT and Winograd
    # algorithms (the last two carry ~1e-5 relative error per convolution), oneDNN
    # blocks differently. On CPU alone, batch 1 vs batch 4 already moves these logits
    # (magnitude ~2) by 2e-6. Over ~250 layers that stays below ~1e-4 of the logits'
    # magnitude; 1e-3 of it leaves a margin of ten, while a real fault (TF32 left on,
    # a wrong padding or batch-norm constant) moves them by 1e-2 and more.
    tolerance = 1e-3 * np.abs(cpu).max()
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=tolerance)
    top_two = np.sort(cpu, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2 * tolerance
    assert clear.any()
    assert (gpu.argmax(1) == cpu.argmax(1))[clear].all()


@pytest.fixture(scope="module")
def float32_scores(gpu_model, images, challenge_2) -> np.ndarray:
    """The challenge ensemble's scores of the 32 images in float32, seed 0."""
    return RandomizedEnsemble(gpu_model, challenge_2, seed=0, chunk_size=16).scores(images)


# Label agreement with float32, same seed (same patterns), 32 images. Measured with
# this checkpoint and these images (Keras mixed policies, on CPU): 31/32 for float16,
# 30/32 for bfloat16. Its random weights give small top-two margins (a third of the
# images within 0.03 in logits) against a mean logit error of 2e-3 (float16, 11-bit
# significand) and 1e-2 (bfloat16, 8-bit); the thresholds allow one or two more flips
# on GPU kernels, and a broken precision path (NaNs, overflow, a wrong cast) collapses
# onto a few labels that agree on a third of the images at most.
AGREEMENT = {"float16": 0.90, "bfloat16": 0.85}


@pytest.mark.slow
@pytest.mark.parametrize("precision", sorted(AGREEMENT))
def test_mixed_precision_labels_agree_with_float32(
    precision, irv2_checkpoint, images, challenge_2, float32_scores
):
    model = models.load(MODEL, irv2_checkpoint, precision=precision)
    scores = RandomizedEnsemble(model, challenge_2, seed=0, chunk_size=16).scores(images)
    assert np.isfinite(scores).all()
    agreement = np.mean(scores.argmax(1) == float32_scores.argmax(1))
    assert agreement >= AGREEMENT[precision], f"{precision}: {agreement:.1%} agree with float32"


@pytest.mark.slow
def test_xla_ensemble_gives_the_labels_of_the_plain_one(gpu_model, images, challenge_2):
    plain = RandomizedEnsemble(gpu_model, challenge_2, seed=3, chunk_size=16).scores(images)
    xla = RandomizedEnsemble(
        gpu_model, challenge_2, seed=3, chunk_size=16, jit_compile=True
    ).scores(images)
    # XLA fuses the element-wise work and may pick other conv algorithms: float32
    # rounding only, far below 1e-3 on scores that are sums of probabilities.
    np.testing.assert_allclose(xla, plain, rtol=0, atol=1e-3)
    assert (xla.argmax(1) == plain.argmax(1)).all()


def runner_flags(png_dir: Path, output: Path, checkpoint: str, *extra: str) -> list[str]:
    """The runner's flags for the challenge config, 2 patterns, seed 0, 4-item chunks."""
    return [
        "--noprogress",
        f"--input_dir={png_dir}",
        f"--output_file={output}",
        f"--model={MODEL}",
        f"--checkpoint_path={checkpoint}",
        "--config=challenge",
        "--num_iterations=2",
        "--seed=0",
        "--chunk_size=4",
        *extra,
    ]


def checked_labels(result: subprocess.CompletedProcess, output: Path, png_dir: Path) -> dict:
    """The runner exited 0 on a GPU and wrote one valid row per PNG, sorted; its labels."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/device:GPU:0" in result.stderr, "the runner's TensorFlow created no GPU device"
    labels = read_labels(output)
    assert list(labels) == sorted(path.name for path in png_dir.iterdir())
    assert all(0 <= label <= 1000 for label in labels.values())
    return labels


@pytest.mark.slow
def test_runner_on_the_gpu_equals_the_library(
    irv2_checkpoint, gpu_model, png_dir, challenge_2, tmp_path
):
    output = tmp_path / "labels.csv"
    result = run_python(str(RUNNER), *runner_flags(png_dir, output, irv2_checkpoint))
    labels = checked_labels(result, output, png_dir)
    names = sorted(labels)
    batch = to_model_input(np.stack([read_image(png_dir / name).pixels for name in names]))
    expected = RandomizedEnsemble(gpu_model, challenge_2, seed=0, chunk_size=4).predict(batch)
    assert [labels[name] for name in names] == expected.tolist()


@pytest.mark.slow
def test_runner_with_float16_and_xla(irv2_checkpoint, png_dir, tmp_path):
    output = tmp_path / "labels.csv"
    flags = runner_flags(png_dir, output, irv2_checkpoint, "--precision=float16", "--jit_compile")
    checked_labels(run_python(str(RUNNER), *flags), output, png_dir)


@pytest.mark.slow
def test_mirrored_strategy_scores_equal_one_device_on_two_logical_gpus(
    irv2_checkpoint, images, tmp_path
):
    batch = tmp_path / "images.npy"
    np.save(batch, images[:4])
    result = run_python("-c", COMPARE_MIRRORED, irv2_checkpoint, str(batch), logical_gpus=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["kind"] == "MirroredStrategy" and found["replicas"] >= 2
    one, many = np.array(found["one"]), np.array(found["many"])
    # 4 images x 2 patterns in 4-item chunks: one chunk per replica, each computed as on
    # one device. Each logical GPU autotunes its own conv algorithms, so the scores are
    # equal up to float32 rounding rather than bit for bit; the labels are identical.
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-4)
    assert (many.argmax(1) == one.argmax(1)).all()


@pytest.mark.slow
def test_runner_with_mirrored_strategy_on_two_logical_gpus(irv2_checkpoint, png_dir, tmp_path):
    labels = {}
    for strategy in ("default", "mirrored"):
        output = tmp_path / f"{strategy}.csv"
        flags = runner_flags(png_dir, output, irv2_checkpoint, f"--strategy={strategy}")
        result = run_python("-c", RUNNER_ON_TWO_LOGICAL_GPUS, *flags, logical_gpus=True)
        labels[strategy] = checked_labels(result, output, png_dir)
        assert "/device:GPU:1" in result.stderr, "the first GPU was not split in two"
    assert labels["mirrored"] == labels["default"]
