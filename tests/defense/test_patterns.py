"""A model seen through patterns: what a config draws, and the one way outputs are computed."""

import numpy as np
import pytest
import tensorflow as tf

from defense.config import DefenseConfig, load_config
from defense.patterns import (
    Pattern,
    draw_patterns,
    make_generator,
    outputs_through,
    outputs_through_config,
)
from defense.randomization import resize_and_pad
from tests.support.tiny_models import tiny_classifier


@pytest.fixture(scope="module")
def model():
    return tiny_classifier(7, kernel=3, strides=2)


def test_one_pattern_per_iteration_shared_by_the_batch_or_one_per_item():
    challenge = load_config("challenge")
    shared = draw_patterns(make_generator(0), challenge, 4, 3)
    assert shared.size.shape == [12]
    assert (shared.size.numpy().reshape(3, 4) == shared.size.numpy()[::4, None]).all()
    own = draw_patterns(make_generator(0), challenge.replace(per_image=True), 4, 3)
    assert len(set(own.size.numpy().tolist())) > 3


def test_the_same_seed_draws_the_same_stream_whatever_the_config():
    a = draw_patterns(make_generator(5), load_config("challenge"), 2, 6).flip.numpy()
    b = draw_patterns(make_generator(5), load_config("none").replace(flip_probability=0.5), 2, 6)
    assert (a == b.flip.numpy()).all() and not b.size.numpy().any()


def test_outputs_through_resize_and_pad_or_only_flip(model):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 28, 28, 3)).astype(np.float32)
    patterns = Pattern.stack([Pattern(30, 1, 2, True), Pattern(26, 0, 5)])
    got = outputs_through(model, images, patterns, out_size=32)["logits"].numpy()
    for i, pattern in enumerate([Pattern(30, 1, 2, True), Pattern(26, 0, 5)]):
        seen = resize_and_pad(images[i : i + 1], *pattern[:3], flip=pattern.flip, out_size=32)
        np.testing.assert_allclose(got[i], model(seen)["logits"][0], rtol=1e-5, atol=1e-5)
    plain = DefenseConfig(name="plain", randomize=False)
    flipped = outputs_through_config(model, images, patterns, plain)["logits"].numpy()
    expected = model(tf.stack([images[0, :, ::-1], images[1]]))["logits"].numpy()
    np.testing.assert_allclose(flipped, expected, rtol=1e-5, atol=1e-5)
