"""Shared fixtures, built once per session: a generated slim Inception-ResNet-v2
checkpoint, the trained digits CNN, and its DeepFool and C&W adversarial sets (used
both by the attack tests and by the paper-claims tests).

TensorFlow is imported inside the fixtures so that tests which do not use them
start quickly. The hooks below handle the `gpu` marker and `--check_gpu`; they too
import TensorFlow only when a gpu test is selected or the option is given.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.support.run_once import run_once

_GPUS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--check_gpu`: the GPU CI job's switch from skipping the gpu tests to failing the run."""
    parser.addoption(
        "--check_gpu",
        action="store_true",
        default=False,
        help="fail the run at once when TensorFlow sees no GPU, instead of skipping the tests "
        "marked gpu (the GPU CI job uses it, so that a runner without a GPU cannot pass)",
    )


def visible_gpus(config: pytest.Config) -> list:
    """TensorFlow's physical GPUs, looked up once per process; turns TF32 off when there are any.

    As in Keras' conftest: TF32 rounds matmul and convolution inputs to 10 mantissa
    bits on Ampere and later GPUs, far coarser than the float32 tolerances the tests
    use on CPU.
    """
    if _GPUS not in config.stash:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            tf.config.experimental.enable_tensor_float_32_execution(False)
        config.stash[_GPUS] = gpus
    return config.stash[_GPUS]


def pytest_configure(config: pytest.Config) -> None:
    """Let processes share a GPU; with `--check_gpu`, stop before any test when there is none.

    Every xdist worker and every subprocess a test starts is its own TensorFlow
    process, and without memory growth the first one to touch a GPU takes nearly all
    of its memory. Setting the variable here needs no TensorFlow import. The check
    runs in the xdist controller too, so a GPU-less run fails before workers start.
    """
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if config.getoption("check_gpu") and not visible_gpus(config):
        raise pytest.UsageError(
            "--check_gpu: TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is "
            "empty). Check the NVIDIA driver (nvidia-smi), `docker run --gpus all`, and that "
            "the CUDA build of TensorFlow is installed; without --check_gpu the tests marked "
            "gpu are skipped instead."
        )


def keep_xdist_groups(items: list[pytest.Item]) -> None:
    """Give each item with `xdist_group` marks the `@group` suffix `--dist loadgroup` sends
    it by, where pytest-xdist's own suffix did not take.

    pytest-xdist (3.8) appends it to `item._nodeid`, which pytest 9.2 no longer reads (its
    nodeid is `str(item._id)`, pytest-dev/pytest-xdist#1386), so every group would be
    spread over the workers and its module fixtures built on each of them.
    """
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix):
            item._id = type(item._id).parse(item.nodeid + suffix)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the xdist groups (on a `--dist loadgroup` worker); skip the selected gpu tests
    when TensorFlow sees no GPU.

    `trylast` runs this after pytest-xdist's own grouping and after `-m`/`-k`
    deselection, so TensorFlow is imported only when a gpu test is actually going to run.
    """
    if getattr(config.option, "loadgroup", False):
        keep_xdist_groups(items)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and not visible_gpus(config):
        skip = pytest.mark.skip(reason="TensorFlow sees no GPU (--check_gpu makes this an error)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def irv2_values() -> dict[str, np.ndarray]:
    """Deterministic test values of the 908 slim Inception-ResNet-v2 variables, by slim name."""
    from tests.support.slim_reference.checkpoint_writer import deterministic_values
    from tests.support.slim_reference.inception_resnet_v2 import variable_shapes

    return deterministic_values(variable_shapes())


@pytest.fixture(scope="session")
def irv2_checkpoint(
    irv2_values: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Prefix of a slim-format checkpoint holding `irv2_values`; use it as a checkpoint path."""
    from tests.support.slim_reference.checkpoint_writer import write_checkpoint

    folder = tmp_path_factory.mktemp("irv2_checkpoint")
    return write_checkpoint(folder / "inception_resnet_v2.ckpt", irv2_values)


@pytest.fixture(scope="session")
def fgsm_run(irv2_checkpoint, tmp_path_factory):
    """The FGSM submission at MAX_EPSILON 4 on the generated checkpoint, with true labels
    and float copies, batches of 2: (inputs, output, checkpoint). Its users share the
    xdist group "fgsm_run", so it runs once."""
    from tests.support.adversarial_helpers import fgsm_submission_run

    inputs, output = fgsm_submission_run(tmp_path_factory.mktemp("fgsm"), irv2_checkpoint)
    return inputs, output, irv2_checkpoint


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """A small CNN trained on scikit-learn's digits (about half a minute), with test data;
    trained once per run and loaded by the other workers (`run_once`)."""
    import keras

    from tests.support.digits import Digits, build_model, train

    def trained() -> dict[str, np.ndarray]:
        found = train()
        weights = {f"weight_{i}": w for i, w in enumerate(found.model.get_weights())}
        return {"x_test": found.x_test, "y_test": found.y_test, **weights}

    arrays = run_once(tmp_path_factory, "digits", trained)
    keras.utils.set_random_seed(0)  # as train() leaves the global seeds, wherever it ran
    model = build_model()
    model.set_weights([arrays[f"weight_{i}"] for i in range(len(model.weights))])
    return Digits(model, arrays["x_test"], arrays["y_test"])


@pytest.fixture(scope="session")
def digits_target(digits):
    """The vanilla scenario's target model: the undefended digits CNN, as a logits function."""
    from attacks.evaluation.scenarios import build_scenario, target_model
    from tests.support.digits import INPUT_SIZE, OUT_SIZE

    scenario = build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    return target_model(digits.model, scenario).logits


@pytest.fixture(scope="session")
def digits_correct(digits, digits_target) -> tuple[np.ndarray, np.ndarray]:
    """The test images the CNN classifies correctly (the paper attacks only those), and labels."""
    keep = np.argmax(digits_target(digits.x_test).numpy(), axis=1) == digits.y_test
    return digits.x_test[keep], digits.y_test[keep]


@pytest.fixture(scope="session")
def deepfool_run(digits_target, digits_correct, tmp_path_factory):
    """Images, labels, DeepFool examples and per-example steps, at the paper's settings."""
    from attacks.deepfool import DeepFool
    from tests.support.digits import DEEPFOOL_IMAGES

    images, labels = (a[:DEEPFOOL_IMAGES] for a in digits_correct)

    def attacked() -> dict[str, np.ndarray]:
        adversarial, steps = DeepFool().with_steps(digits_target, images)
        return {"adversarial": adversarial.numpy(), "steps": steps.numpy()}

    found = run_once(tmp_path_factory, "deepfool", attacked)
    return images, labels, found["adversarial"], found["steps"]


@pytest.fixture(scope="session")
def cw_run(digits_target, digits_correct, tmp_path_factory):
    """Images, labels and untargeted C&W examples with the digits tests' shortened schedule."""
    from attacks.carlini_wagner import CarliniWagnerL2
    from tests.support.digits import CW_FAST_ITERATIONS, CW_IMAGES

    images, labels = (a[:CW_IMAGES] for a in digits_correct)

    def attacked() -> dict[str, np.ndarray]:
        attack = CarliniWagnerL2(max_iterations=CW_FAST_ITERATIONS)
        return {"adversarial": attack(digits_target, images, labels).numpy()}

    found = run_once(tmp_path_factory, "cw", attacked)
    return images, labels, found["adversarial"]


@pytest.fixture
def cluster():
    """A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head that
    runs nothing and two worker nodes of one CPU each, as (cluster, nodes)."""
    ray = pytest.importorskip("ray")
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()
