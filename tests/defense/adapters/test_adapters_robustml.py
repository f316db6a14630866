"""The robustml adapter: the full defense as a `robustml.model.Model`, evaluated by
robustml's own `evaluate` with a small EOT attack written against robustml's API.

robustml 0.0.3 pins numpy < 2 and Pillow < 6 in its metadata, so it is not a test
extra: install it with `pip install --no-deps robustml==0.0.3` (these tests are
skipped without it).
"""

import numpy as np
import pytest

from defense.common.errors import ParameterError
from defense.config import DefenseConfig
from tests.support.tiny_models import tiny_classifier

robustml = pytest.importorskip("robustml")
from defense.adapters.robustml import RobustMLModel  # noqa: E402

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)

TINY = DefenseConfig(name="tiny", low=12, high=16, out_size=16, num_iterations=4, aux_weight=0.0)


class SmallImages(robustml.dataset.Dataset):
    """12x12 RGB images in [0, 1] with 10 labels (the tiny models' data)."""

    shape = (12, 12, 3)
    labels = 10


class Digits(robustml.dataset.Dataset):
    """The test digits: 32x32 RGB images in [0, 1], 10 labels."""

    shape = (32, 32, 3)
    labels = 10


class DigitsProvider(robustml.provider.Provider):
    """Test digits as robustml examples: (image in [0, 1], label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = (images + 1) / 2, labels

    def provides(self, dataset) -> bool:
        return isinstance(dataset, Digits)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


class EOTAttack(robustml.attack.Attack):
    """L-inf PGD on the model's EOT gradient, within its threat model's epsilon."""

    def __init__(self, model: RobustMLModel, *, steps: int, step_size: float, samples: int):
        self.model, self.steps, self.step_size, self.samples = model, steps, step_size, samples

    def run(self, x, y, target):
        epsilon = self.model.threat_model.epsilon
        adversarial = x
        for _ in range(self.steps):
            gradient = self.model.loss_gradient(adversarial[None], [y], samples=self.samples)[0]
            adversarial = np.clip(
                adversarial + self.step_size * np.sign(gradient), x - epsilon, x + epsilon
            )
            adversarial = np.clip(adversarial, 0, 1)
        return adversarial


class NoAttack(robustml.attack.Attack):
    def run(self, x, y, target):
        return x


@pytest.fixture(scope="module")
def tiny():
    return RobustMLModel(tiny_classifier(10, kernel=3), TINY, dataset=SmallImages(), seed=0)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).uniform(0, 1, (12, 12, 3)).astype(np.float32)


def test_defaults_are_the_competitions():
    model = RobustMLModel(tiny_classifier(1001, kernel=3, aux=False), TINY)
    assert isinstance(model.dataset, robustml.dataset.ImageNet)
    assert model.dataset.shape == (299, 299, 3)
    assert isinstance(model.threat_model, robustml.threat_model.Linf)
    assert model.threat_model.epsilon == 16 / 255 and not model.threat_model.targeted
    assert model.background


def test_slim_labels_come_back_as_imagenet_labels():
    """A slim-style model that puts (nearly) all its score on slim class 5: ImageNet 4."""
    import keras

    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    head = keras.layers.Dense(1001, kernel_initializer="zeros", bias_initializer="zeros")
    model = keras.Model(inputs, {"logits": head(pooled)})
    bias = np.zeros(1001, np.float32)
    bias[[0, 5]] = 20.0, 10.0  # background wins the slim argmax, slim 5 the ImageNet one
    head.bias.assign(bias)
    adapter = RobustMLModel(model, TINY, dataset=robustml.dataset.ImageNet((12, 12, 3)))
    assert adapter.classify(np.full((12, 12, 3), 0.5, np.float32)) == 4
    assert adapter.logits(np.zeros((2, 12, 12, 3), np.float32)).shape == (2, 1000)


def test_classify_returns_a_python_label(tiny, image):
    label = tiny.classify(image)
    assert isinstance(label, int) and 0 <= label < 10
    assert not tiny.background


def test_inputs_in_0_1_are_mapped_to_the_models_range(tiny, image):
    """Gray (0.5) in [0, 1] is 0 in [-1, 1], the padding: an all-gray image is all zeros."""
    gray = RobustMLModel(
        tiny_classifier(10, kernel=3), TINY.replace(num_iterations=1), dataset=SmallImages()
    )
    outputs = gray.defense.classifier(np.zeros((1, 16, 16, 3), np.float32))["logits"]
    expected = np.log(np.exp(outputs.numpy()) / np.exp(outputs.numpy()).sum())
    np.testing.assert_allclose(
        gray.logits(np.full((1, 12, 12, 3), 0.5, np.float32)), expected, rtol=1e-5
    )


def test_loss_gradient_is_in_image_units_and_non_zero(tiny, image):
    gradient = tiny.loss_gradient(np.stack([image, 1 - image]), [3, 5], samples=3)
    assert gradient.shape == (2, 12, 12, 3)
    assert (np.abs(gradient).reshape(2, -1).max(axis=1) > 0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda model, image: model.classify(image[None]), "one image of shape"),
        (lambda model, image: model.classify(image[:8]), "one image of shape"),
        (lambda model, image: model.logits(image), "a batch of images of shape"),
        (lambda model, image: model.loss_gradient(image, [1]), "a batch of images of shape"),
    ],
)
def test_wrong_shapes_are_refused(tiny, image, call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny, image)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda x: (x * 255).astype(np.uint8),
            "x must hold floating-point values in \\[0, 1\\], got uint8",
        ),
        (lambda x: x * 255, r"x must hold values in \[0, 1\], found .*\[0, 255\] pixels"),
        (lambda x: x * 2 - 1, r"x must hold values in \[0, 1\], found values in \[-0.99"),
        (lambda x: np.where(x > 0.5, np.nan, x), "x must be finite"),
    ],
)
def test_images_outside_0_1_or_not_finite_are_refused(tiny, image, change, message):
    for call in (
        lambda x: tiny.classify(x),
        lambda x: tiny.logits(x[None]),
        lambda x: tiny.loss_gradient(x[None], [1]),
    ):
        with pytest.raises(ParameterError, match=message) as raised:
            call(change(image))
        assert raised.value.parameters == ("x",)


def test_float_rounding_past_0_1_is_accepted(tiny, image):
    assert 0 <= tiny.classify(np.clip(image * 1.0005, -0.0005, 1.0005).astype(np.float64)) < 10


@pytest.mark.parametrize(
    ("reshape", "message"),
    [
        (lambda x: np.transpose(x, (2, 0, 1)), "channels first"),
        (lambda x: x[..., :1], "one channel"),
    ],
)
def test_single_images_of_the_wrong_layout_get_a_hint(tiny, image, reshape, message):
    with pytest.raises(
        ParameterError, match=rf"x must be one image of shape \[12, 12, 3\].*{message}"
    ):
        tiny.classify(reshape(image))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([2.7], r"y must be whole-number labels, found 2.7"),
        ([10], r"y must be labels in \[0, 9\], found 10"),
        ([-1], r"y must be labels in \[0, 9\], found -1"),
        ([1, 2], r"y must be index labels of shape \[1\], one per image, got shape \(2,\)"),
        (np.eye(10)[[1]], r"got shape \(1, 10\)"),
    ],
)
def test_bad_labels_are_refused(tiny, image, labels, message):
    with pytest.raises(ParameterError, match=message) as raised:
        tiny.loss_gradient(image[None], labels)
    assert raised.value.parameters == ("y",)


def test_integral_float_labels_are_accepted(tiny, image):
    gradient = tiny.loss_gradient(image[None], np.array([3.0]), samples=1)
    assert gradient.shape == (1, 12, 12, 3)


def test_imagenet_labels_are_checked_before_the_background_shift(image):
    model = RobustMLModel(
        tiny_classifier(1001, kernel=3), TINY, dataset=robustml.dataset.ImageNet((12, 12, 3))
    )
    model.loss_gradient(image[None], [999], samples=1)
    with pytest.raises(ParameterError, match=r"y must be labels in \[0, 999\], found 1000"):
        model.loss_gradient(image[None], [1000], samples=1)


class GrayImages(robustml.dataset.Dataset):
    shape = (12, 12, 1)
    labels = 10


def test_datasets_of_other_than_rgb_images_are_refused():
    with pytest.raises(ParameterError, match=r"dataset must hold RGB images .*got \(12, 12, 1\)"):
        RobustMLModel(tiny_classifier(10, kernel=3), TINY, dataset=GrayImages())


def test_the_dataset_images_must_give_the_models_input_size():
    fixed = tiny_classifier(10, kernel=3, input_size=16)
    RobustMLModel(fixed, TINY, dataset=SmallImages())
    with pytest.raises(ParameterError, match=r"dataset shape \(12, 12, 3\) gives the model 12x12"):
        RobustMLModel(fixed, TINY.replace(randomize=False), dataset=SmallImages())


@pytest.mark.parametrize("epsilon", [0, -0.1, 1.5, float("nan")])
def test_epsilon_must_be_in_image_units(epsilon):
    with pytest.raises(ValueError, match="epsilon must be in"):
        RobustMLModel(tiny_classifier(10, kernel=3), TINY, dataset=SmallImages(), epsilon=epsilon)


def test_the_dataset_must_match_the_logits():
    with pytest.raises(ValueError, match="dataset has 10 labels but the model's logits have 12"):
        RobustMLModel(tiny_classifier(12, kernel=3), TINY, dataset=SmallImages())


# The digits CNN behind its defense, attacked at 24/255 in 6 steps of 4/255 with 10
# patterns per gradient, on 20 test images.
EPSILON, STEP_SIZE, STEPS, SAMPLES, IMAGES = 24 / 255, 4 / 255, 6, 10, 20


@pytest.fixture(scope="module")
def success_rates(digits):
    """robustml's attack success rate of the EOT attack, and of no attack at all."""
    from tests.support.digits import DEFENSE

    model = RobustMLModel(digits.model, DEFENSE, dataset=Digits(), epsilon=EPSILON, seed=2)
    provider = DigitsProvider(digits.x_test[:IMAGES], digits.y_test[:IMAGES])
    attack = EOTAttack(model, steps=STEPS, step_size=STEP_SIZE, samples=SAMPLES)
    return {
        "eot": robustml.evaluate.evaluate(model, attack, provider, 0, IMAGES, deterministic=True),
        "none": robustml.evaluate.evaluate(
            model, NoAttack(), provider, 0, IMAGES, deterministic=True
        ),
    }


@pytest.mark.slow
def test_robustml_evaluation_of_an_eot_attack(success_rates):
    print(
        f"\nrobustml success rate: EOT attack {success_rates['eot']:.0%}, "
        f"no attack {success_rates['none']:.0%}"
    )
    assert success_rates["none"] <= 0.1
    assert success_rates["eot"] >= 0.8
