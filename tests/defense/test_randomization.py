"""Random resizing + padding: bit-exact legacy nearest, gradients, sampling, static shapes."""

import numpy as np
import pytest
import tensorflow as tf

from defense.patterns import Pattern, apply_patterns, make_generator, sample_patterns
from defense.randomization import resize_and_pad


def legacy_resize_and_pad(images, size, top, left, out_size=331):
    """What the TF1 entry computed: legacy nearest resize, then zero padding."""
    resized = tf.raw_ops.ResizeNearestNeighbor(
        images=images, size=[size, size], align_corners=False, half_pixel_centers=False
    )
    return tf.pad(
        resized, [[0, 0], [top, out_size - size - top], [left, out_size - size - left], [0, 0]]
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)


def test_nearest_is_bit_exact_with_tf1_legacy_resize_for_every_size(images):
    for size in range(299, 332):
        for top, left in [(0, 0), (331 - size, 331 - size), ((331 - size) // 2, (331 - size) // 3)]:
            expected = legacy_resize_and_pad(images, size, top, left).numpy()
            got = resize_and_pad(images, size, top, left).numpy()
            np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_nearest_matches_legacy_for_other_input_sizes():
    rng = np.random.default_rng(1)
    for in_size, size in [(224, 331), (330, 331), (331, 310), (100, 257)]:
        x = rng.uniform(-1, 1, (1, in_size, in_size, 3)).astype(np.float32)
        expected = legacy_resize_and_pad(x, size, 0, 0, out_size=size).numpy()
        np.testing.assert_array_equal(
            resize_and_pad(x, size, 0, 0, out_size=size).numpy(), expected
        )


def test_modern_nearest_resize_is_not_the_legacy_one(images):
    """Why the project does not use tf.image.resize: half-pixel centres move most pixels."""
    modern = tf.image.resize(images, [320, 320], "nearest").numpy()
    legacy = legacy_resize_and_pad(images, 320, 0, 0, out_size=320).numpy()
    assert np.mean(modern != legacy) > 0.5


def test_bilinear_matches_tf2_resize(images):
    for size in (299, 310, 330):
        expected = tf.image.resize(images, [size, size], "bilinear").numpy()
        got = resize_and_pad(images, size, 0, 0, out_size=size, method="bilinear").numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_padding_is_zero_and_image_sits_at_offset(images):
    out = resize_and_pad(images, 310, 7, 13, method="bilinear").numpy()
    assert out.shape == (2, 331, 331, 3)
    assert not out[:, :7].any() and not out[:, 317:].any()
    assert not out[:, :, :13].any() and not out[:, :, 323:].any()
    assert np.all(np.abs(out[:, 7:317, 13:323]).max(axis=(1, 2)) > 0.9)


def test_flip_is_applied_before_resizing(images):
    flipped = resize_and_pad(images, 317, 3, 9, flip=True).numpy()
    expected = legacy_resize_and_pad(images[:, :, ::-1], 317, 3, 9).numpy()
    np.testing.assert_array_equal(flipped, expected)


def test_per_image_patterns_equal_individual_calls(images):
    patterns = Pattern(
        tf.constant([305, 330]),
        tf.constant([20, 0]),
        tf.constant([1, 1]),
        tf.constant([True, False]),
    )
    batched = apply_patterns(images, patterns).numpy()
    for i in range(2):
        single = resize_and_pad(
            images[i : i + 1],
            patterns.size[i],
            patterns.top[i],
            patterns.left[i],
            flip=patterns.flip[i],
        ).numpy()
        np.testing.assert_array_equal(batched[i : i + 1], single)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_gradient_matches_tf_resize_gradient(images, method):
    x = tf.constant(images)
    weights = tf.constant(np.random.default_rng(2).normal(size=(2, 331, 331, 3)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(resize_and_pad(x, 320, 4, 6, method=method) * weights)
        if method == "nearest":
            resized = tf.raw_ops.ResizeNearestNeighbor(
                images=x, size=[320, 320], align_corners=False, half_pixel_centers=False
            )
        else:
            resized = tf.image.resize(x, [320, 320], "bilinear")
        padded = tf.pad(resized, [[0, 0], [4, 7], [6, 5], [0, 0]])
        theirs = tf.reduce_sum(padded * weights)
    np.testing.assert_allclose(
        tape.gradient(ours, x), tape.gradient(theirs, x), rtol=1e-5, atol=1e-5
    )


def test_sampling_covers_both_ends_inclusive():
    patterns = sample_patterns(
        make_generator(0), 20000, low=310, high=331, out_size=331, flip_probability=0.5
    )
    size, top, left = (field.numpy() for field in patterns[:3])
    assert size.min() == 310 and size.max() == 330
    assert top.min() == 0 and left.min() == 0
    assert np.all(top <= 331 - size) and np.all(left <= 331 - size)
    assert np.any(top == 331 - size) and np.any(left == 331 - size)
    counts = np.bincount(size - 310)
    assert counts.min() > 0.8 * counts.mean()
    assert 0.47 < patterns.flip.numpy().mean() < 0.53


def test_seed_reproduces_and_os_entropy_differs():
    def draw(generator):
        return np.stack(sample_patterns(generator, 50, low=299, high=331, out_size=331)[:3])

    np.testing.assert_array_equal(draw(make_generator(42)), draw(make_generator(42)))
    assert not np.array_equal(draw(make_generator()), draw(make_generator()))


def test_bad_arguments_are_rejected(images):
    with pytest.raises(ValueError, match="method"):
        resize_and_pad(images, 310, 0, 0, method="bicubic")
    with pytest.raises(ValueError, match="range"):
        sample_patterns(make_generator(0), 1, low=331, high=340, out_size=331)
    with pytest.raises(ValueError, match="NHWC"):
        resize_and_pad(images[0], 310, 0, 0)


def test_one_trace_serves_every_pattern(images):
    traced = tf.function(lambda x, size, top, left: resize_and_pad(x, size, top, left))
    for size, top, left in [(299, 0, 0), (310, 5, 9), (330, 1, 0)]:
        out = traced(images, tf.constant(size), tf.constant(top), tf.constant(left))
        assert out.shape == (2, 331, 331, 3)
    assert traced.experimental_get_tracing_count() == 1
