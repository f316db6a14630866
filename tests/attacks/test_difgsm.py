"""DI-FGSM on the digits CNN: its budget, that without diversity it is I-FGSM, that its
steps really see the model through the defense's resize-and-pad, and its checks."""

import numpy as np
import pytest
import tensorflow as tf

from attacks import CLIP_MAX, CLIP_MIN, pixels_to_model
from attacks.difgsm import DIFGSM, PAPER_SIZE_RATIO, resize_limit
from defense.common.errors import ParameterError
from tests.support.digits import INPUT_SIZE, NUM_CLASSES

IMAGES = 40
# The digits' canvas at the paper's ratio: sizes 32..34 padded to 35.
LIMIT = 35


@pytest.fixture
def sample(digits_correct):
    return tuple(a[:IMAGES] for a in digits_correct)


class Recorder:
    """A logits function that keeps every input it is called on."""

    def __init__(self, logits_fn):
        self.logits_fn, self.inputs = logits_fn, []

    def __call__(self, images):
        self.inputs.append(np.asarray(images))
        return self.logits_fn(images)


def i_fgsm(logits_fn, images, labels, *, epsilon, steps, targeted=False):
    """Kurakin et al.'s I-FGSM: steps of epsilon / steps along the sign of the gradient of
    the cross-entropy, each clipped to the ball and the image range."""
    radius, step = pixels_to_model(epsilon), pixels_to_model(epsilon / steps)
    x = tf.constant(images)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits_fn(x))
            )
        x = x + (-step if targeted else step) * tf.sign(tape.gradient(loss, x))
        x = tf.clip_by_value(images + tf.clip_by_value(x - images, -radius, radius), -1, 1)
    return x.numpy()


def accuracy(logits_fn, images, labels):
    return float(np.mean(np.argmax(logits_fn(tf.constant(images)).numpy(), axis=1) == labels))


def test_the_default_limit_is_the_papers_and_scales_with_the_input():
    assert resize_limit(299, PAPER_SIZE_RATIO) == 330
    assert resize_limit(INPUT_SIZE, PAPER_SIZE_RATIO) == LIMIT
    assert resize_limit(4, PAPER_SIZE_RATIO) == 5  # always room for one offset
    assert DIFGSM().step_size == 1.6 and DIFGSM(steps=4, epsilon=8).step_size == 2.0


def test_it_stays_in_its_ball_and_lowers_the_undefended_accuracy(digits_target, sample):
    images, labels = sample
    tf.random.set_seed(0)
    # At 24 pixel units (the small CNN, trained on random rescaling, shrugs off much of
    # 16: 59 % of the correct images stay correct there, 23 % at 24).
    adversarial = DIFGSM(epsilon=24)(digits_target, images, labels).numpy()
    assert np.abs(adversarial - images).max() <= pixels_to_model(24) + 1e-6
    assert adversarial.min() >= CLIP_MIN and adversarial.max() <= CLIP_MAX
    assert accuracy(digits_target, images, labels) == 1.0
    assert accuracy(digits_target, adversarial, labels) < 0.5


@pytest.mark.parametrize("targeted", [False, True])
def test_without_diversity_it_is_i_fgsm(digits_target, sample, targeted):
    images, labels = sample
    if targeted:
        labels = (labels + 3) % NUM_CLASSES
    attack = DIFGSM(epsilon=12, steps=5, diversity_probability=0.0)
    found = attack(digits_target, images, labels, targeted=targeted).numpy()
    expected = i_fgsm(digits_target, images, labels, epsilon=12, steps=5, targeted=targeted)
    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert np.abs(found - images).max() > pixels_to_model(11)


def zero_lines(canvas, axis):
    """How many rows (axis 1) or columns (axis 2) are zero across the whole batch."""
    other = 2 if axis == 1 else 1
    return int(np.sum(np.all(canvas == 0, axis=(0, other, 3))))


def test_with_certain_diversity_every_step_sees_a_fresh_padded_canvas(digits_target, sample):
    images, labels = sample
    recorder = Recorder(digits_target)
    tf.random.set_seed(1)
    diverse = DIFGSM(steps=12, diversity_probability=1.0)(recorder, images, labels).numpy()
    assert len(recorder.inputs) == 12
    assert {canvas.shape for canvas in recorder.inputs} == {(IMAGES, LIMIT, LIMIT, 3)}
    # A size in [32, 35) leaves LIMIT - size zero rows and as many zero columns.
    padding = [zero_lines(canvas, 1) for canvas in recorder.inputs]
    assert padding == [zero_lines(canvas, 2) for canvas in recorder.inputs]
    assert set(padding) <= {1, 2, 3} and len(set(padding)) > 1
    plain = DIFGSM(steps=12, diversity_probability=0.0)(digits_target, images, labels).numpy()
    assert np.mean(diverse != plain) > 0.1


def test_half_the_steps_are_diverse_and_a_seed_repeats_the_run(digits_target, sample):
    images, labels = sample[0][:8], sample[1][:8]

    def run(seed):
        recorder = Recorder(digits_target)
        tf.random.set_seed(seed)
        result = DIFGSM(steps=20)(recorder, images, labels).numpy()
        return result, [canvas.shape[1] for canvas in recorder.inputs]

    first, sizes = run(3)
    assert set(sizes) == {INPUT_SIZE, LIMIT}
    again, sizes_again = run(3)
    np.testing.assert_array_equal(first, again)
    assert sizes == sizes_again
    other, other_sizes = run(4)
    assert other_sizes != sizes or not np.array_equal(other, first)


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 300}, "epsilon"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"epsilon": 4, "step_size": 5}, "step_size"),
        ({"diversity_probability": 1.5}, "diversity_probability"),
        ({"diversity_probability": -0.1}, "diversity_probability"),
        ({"diversity_probability": float("nan")}, "diversity_probability"),
        ({"max_size_ratio": 1.0}, "max_size_ratio"),
        ({"max_size_ratio": 2.5}, "max_size_ratio"),
    ],
)
def test_bad_hyper_parameters_name_the_parameter(options, parameter):
    with pytest.raises(ParameterError) as raised:
        DIFGSM(**options)
    assert raised.value.parameters[0] == parameter


def test_non_square_images_are_refused(digits_target):
    images = np.zeros((2, 32, 30, 3), np.float32)
    with pytest.raises(ParameterError, match="square images, got 32x30") as raised:
        DIFGSM()(digits_target, images, np.array([1, 2]))
    assert raised.value.parameters == ("images",)
