"""The randomization as a Keras layer: one pattern per batch or per image, drawn by the
defense's own sampler with the config's defaults, and a config that round-trips."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from defense.config import DefenseConfig
from defense.layers import RandomResizePad
from defense.patterns import apply_patterns, draw_patterns, make_generator


def test_layer_uses_one_pattern_per_batch_or_per_image():
    ones = np.ones((8, 299, 299, 3), np.float32)
    per_batch = RandomResizePad(299, 331, seed=5)(ones).numpy()
    assert per_batch.shape == (8, 331, 331, 3)
    assert all(np.array_equal(per_batch[0], image) for image in per_batch)
    per_image = RandomResizePad(299, 331, per_image=True, seed=5)(ones).numpy()
    assert len({image.sum() for image in per_image[..., 0]}) > 1


def test_layer_config_round_trips_with_its_seed(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    layer = RandomResizePad(300, 331, per_image=True, flip_probability=0.5, seed=11)
    clone = RandomResizePad.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.get_config()["seed"] == 11
    np.testing.assert_array_equal(clone(images).numpy(), layer(images).numpy())

    inputs = keras.Input((299, 299, 3))
    model = keras.Model(inputs, RandomResizePad(310, 331, seed=3)(inputs))
    path = tmp_path / "randomized.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    fresh = keras.Model(inputs, RandomResizePad(310, 331, seed=3)(inputs))
    np.testing.assert_array_equal(reloaded(images).numpy(), fresh(images).numpy())
    assert RandomResizePad(310, 331).get_config()["seed"] is None


def test_layer_defaults_are_the_configs():
    defaults = DefenseConfig(name="defaults")
    config = RandomResizePad().get_config()
    for field in ("low", "high", "out_size", "method", "per_image", "flip_probability"):
        assert config[field] == getattr(defaults, field), field


@pytest.mark.parametrize("per_image", [False, True])
def test_layer_draws_what_the_defense_draws(per_image):
    images = np.random.default_rng(1).uniform(-1, 1, (3, 20, 20, 3)).astype(np.float32)
    layer = RandomResizePad(20, 24, 24, per_image=per_image, seed=7)
    config = DefenseConfig(
        name="same", low=20, high=24, out_size=24, num_iterations=1, per_image=per_image
    )
    patterns = draw_patterns(make_generator(7), config, 3, 1)
    expected = apply_patterns(tf.constant(images), patterns, out_size=24)
    np.testing.assert_array_equal(layer(images).numpy(), expected.numpy())


def test_bad_layer_arguments_are_refused_by_the_config_check():
    with pytest.raises(ValueError, match="flip_probability must be in"):
        RandomResizePad(flip_probability=1.5)
    with pytest.raises(ValueError, match="resize range"):
        RandomResizePad(331, 310)
