"""The randomized ensemble equals the entry's loop of single patterns, however it is chunked."""

import numpy as np
import pytest
import tensorflow as tf

from defense.config import load_config
from defense.ensemble import RandomizedEnsemble
from tests.support.tiny_models import tiny_classifier


@pytest.fixture(scope="module")
def tiny_model():
    """A small two-headed classifier standing in for Inception-ResNet-v2."""
    return tiny_classifier(11, kernel=5, strides=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (5, 299, 299, 3)).astype(np.float32)


def loop_of_single_patterns(model, config, images, patterns):
    """The entry's algorithm, one pattern at a time, with TF's own legacy resize and pad."""
    total = np.zeros((len(images), 11))
    for k in range(len(patterns.size)):
        index = k % len(images)
        image = images[index : index + 1]
        if patterns.flip[k]:
            image = image[:, :, ::-1]
        size, top, left = int(patterns.size[k]), int(patterns.top[k]), int(patterns.left[k])
        resized = tf.raw_ops.ResizeNearestNeighbor(
            images=image, size=[size, size], align_corners=False, half_pixel_centers=False
        )
        pad = config.out_size - size
        padded = tf.pad(resized, [[0, 0], [top, pad - top], [left, pad - left], [0, 0]])
        outputs = model(padded)
        score = tf.nn.softmax(outputs["logits"]) + config.aux_weight * tf.nn.softmax(
            outputs["aux_logits"]
        )
        total[index] += score.numpy()[0]
    return total


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_scores_equal_the_loop_of_single_patterns(tiny_model, images, chunk_size):
    config = load_config("challenge").replace(num_iterations=6)
    ensemble = RandomizedEnsemble(tiny_model, config, seed=3, chunk_size=chunk_size)
    patterns = RandomizedEnsemble(tiny_model, config, seed=3).draw_patterns(len(images))
    expected = loop_of_single_patterns(tiny_model, config, images, patterns)
    np.testing.assert_allclose(ensemble.scores(images), expected, rtol=1e-5, atol=1e-6)


def test_one_pattern_per_batch_unless_per_image(tiny_model):
    config = load_config("challenge").replace(num_iterations=4)
    shared = RandomizedEnsemble(tiny_model, config, seed=1).draw_patterns(3)
    for field in shared:
        assert all(len(set(field.numpy()[i * 3 : i * 3 + 3])) == 1 for i in range(4))
    own = RandomizedEnsemble(tiny_model, config.replace(per_image=True), seed=1).draw_patterns(3)
    assert len(set(own.size.numpy())) > 4


def test_flip_only_when_configured(tiny_model):
    challenge = load_config("challenge").replace(num_iterations=200)
    flips = RandomizedEnsemble(tiny_model, challenge, seed=1).draw_patterns(1).flip.numpy()
    assert 0.35 < flips.mean() < 0.65
    paper = load_config("paper").replace(num_iterations=50)
    assert not RandomizedEnsemble(tiny_model, paper, seed=1).draw_patterns(1).flip.numpy().any()


def test_no_randomization_is_the_plain_classifier(tiny_model, images):
    ensemble = RandomizedEnsemble(tiny_model, load_config("none"), seed=0)
    expected = tf.nn.softmax(tiny_model(images)["logits"]).numpy()
    np.testing.assert_allclose(ensemble.scores(images), expected, rtol=1e-6)
    np.testing.assert_array_equal(ensemble.predict(images), expected.argmax(axis=1))


@pytest.mark.parametrize("early_exit", [False, True])
def test_batches_of_any_size_trace_once(tiny_model, images, early_exit):
    # The compiled function sees one chunk of items: XLA compiles it once, too.
    ensemble = RandomizedEnsemble(
        tiny_model,
        load_config("challenge").replace(num_iterations=4),
        chunk_size=4,
        early_exit=early_exit,
    )
    for count in (2, 3, 5, 2):
        ensemble.predict(images[:count])
    assert ensemble._chunk_scores.experimental_get_tracing_count() == 1


def test_os_entropy_by_default_seed_reproduces(tiny_model, images):
    config = load_config("paper").replace(num_iterations=3)

    def draw(seed):
        return RandomizedEnsemble(tiny_model, config, seed=seed).draw_patterns(2).size.numpy()

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not all(np.array_equal(draw(None), draw(None)) for _ in range(3))
