"""EOT-PGD: PGD on the defense's EOT gradient; budget, reproducibility, and that it breaks it."""

import keras
import numpy as np
import pytest

from attacks import pixels_to_model
from attacks.eot import EOTPGD
from attacks.evaluation.scenarios import build_scenario, target_model
from attacks.pgd import PGD
from defense.ensemble import RandomizedEnsemble
from defense.randomized_defense import RandomizedDefense
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

# One worker for this file's tests, so that its module fixtures are built once.
pytestmark = pytest.mark.xdist_group(__name__)


@pytest.fixture(scope="module")
def tiny_model():
    """A small two-headed classifier standing in for Inception-ResNet-v2."""
    return tiny_classifier(11, kernel=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


LABELS = np.array([1, 4, 7])


def attack(model, images, labels, *, config=TINY_DEFENSE, seed=None, chunk_size=None, **params):
    """EOT-PGD with `params` on `model` behind the defense `config`."""
    defense = RandomizedDefense(model, config, chunk_size=chunk_size, seed=seed)
    targeted = params.pop("targeted", False)
    return EOTPGD(**params)(defense, images, labels, targeted=targeted)


def test_it_is_pgd_on_the_defense_eot_gradient(tiny_model, images):
    """One step without a random start: the sign of `RandomizedDefense.loss_gradient`."""
    adversarial = attack(tiny_model, images, LABELS, seed=3, steps=1, samples=4, random_start=False)
    gradient = RandomizedDefense(tiny_model, TINY_DEFENSE, seed=3).loss_gradient(
        images, LABELS, samples=4
    )
    expected = np.clip(images + pixels_to_model(2.0) * np.sign(gradient.numpy()), -1, 1)
    np.testing.assert_allclose(adversarial.numpy(), expected, atol=1e-6)


def test_perturbation_stays_in_the_ball_and_the_image_range(tiny_model, images):
    adversarial = attack(
        tiny_model, images, LABELS, epsilon=8, step_size=3, steps=4, samples=4, seed=0
    ).numpy()
    distance = np.abs(adversarial - images).max()
    assert pixels_to_model(5) < distance <= pixels_to_model(8) + 1e-6
    assert adversarial.min() >= -1.0 and adversarial.max() <= 1.0
    assert np.isclose(adversarial, 1.0).any() or np.isclose(adversarial, -1.0).any()


def test_seed_reproduces_and_one_trace_serves_every_step(tiny_model, images):
    def run(seed):
        defense = RandomizedDefense(tiny_model, TINY_DEFENSE, chunk_size=2, seed=seed)
        adversarial = EOTPGD(epsilon=8, steps=3, samples=5)(defense, images, LABELS).numpy()
        return defense, adversarial

    defense, first = run(5)
    np.testing.assert_array_equal(first, run(5)[1])
    assert not np.array_equal(first, run(None)[1])
    EOTPGD(epsilon=4, step_size=1, steps=2, samples=5)(defense, images, LABELS, targeted=True)
    assert defense._chunk_estimate.experimental_get_tracing_count() == 1


def test_targeted_raises_the_defense_score_of_the_target(tiny_model, images):
    targets = np.array([2, 2, 9])
    adversarial = attack(tiny_model, images, targets, epsilon=16, steps=5, samples=8, targeted=True)
    defense = RandomizedEnsemble(tiny_model, TINY_DEFENSE, seed=11)
    before = defense.scores(images)[np.arange(3), targets]
    after = defense.scores(adversarial.numpy())[np.arange(3), targets]
    assert (after > before).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": 0}, "samples must be >= 1"),
        ({"epsilon": 0}, "epsilon must be in"),
        ({"step_size": 20}, "step_size must be in"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_invalid_hyper_parameters_are_refused_when_the_attack_is_made(options, message):
    with pytest.raises(ValueError, match=message):
        EOTPGD(**options)


def test_one_label_per_image(tiny_model, images):
    with pytest.raises(ValueError, match="one label per image"):
        attack(tiny_model, images, LABELS[:2], steps=1, samples=1)


# The digits CNN behind the defense scaled to 32 -> 36 (30 patterns, no flip). At an
# epsilon of 24 pixel units, plain PGD on the undefended model transfers to the defense
# with about 10% accuracy left; EOT-PGD with 10 patterns per step leaves about 2%.
EPSILON, STEP_SIZE, STEPS, SAMPLES, IMAGES = 24, 6.0, 10, 10, 100


@pytest.fixture(scope="module")
def digits_attacked(digits):
    """Test images, labels, EOT-PGD and transferred-PGD adversarials, and defense accuracy."""
    from tests.support.digits import DEFENSE, INPUT_SIZE, OUT_SIZE

    images, labels = digits.x_test[:IMAGES], digits.y_test[:IMAGES]
    budget = {"epsilon": EPSILON, "step_size": STEP_SIZE, "steps": STEPS}
    eot = attack(digits.model, images, labels, config=DEFENSE, samples=SAMPLES, seed=1, **budget)
    eot = eot.numpy()
    keras.utils.set_random_seed(1)
    vanilla = target_model(
        digits.model, build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    )
    transferred = PGD(**budget)(vanilla.logits, images, labels).numpy()

    def defense_accuracy(candidates):
        defense = RandomizedEnsemble(digits.model, DEFENSE, seed=2)
        return float(np.mean(defense.predict(candidates) == labels))

    return {
        "images": images,
        "eot": eot,
        "clean": defense_accuracy(images),
        "eot_accuracy": defense_accuracy(eot),
        "transferred_accuracy": defense_accuracy(transferred),
    }


@pytest.mark.slow
def test_eot_pgd_breaks_the_defense(digits_attacked):
    assert digits_attacked["clean"] >= 0.9
    assert digits_attacked["eot_accuracy"] <= 0.10


@pytest.mark.slow
def test_eot_pgd_beats_transferred_pgd(digits_attacked):
    assert digits_attacked["eot_accuracy"] <= digits_attacked["transferred_accuracy"] - 0.03


@pytest.mark.slow
def test_digits_adversarials_stay_in_budget(digits_attacked):
    perturbation = digits_attacked["eot"] - digits_attacked["images"]
    assert np.abs(perturbation).max() <= pixels_to_model(EPSILON) + 1e-6
    assert np.abs(digits_attacked["eot"]).max() <= 1.0


@pytest.mark.slow
def test_eot_pgd_leaves_far_less_than_the_papers_attacks(digits, digits_attacked, deepfool_run):
    """The non-adaptive DeepFool set (made on the plain model) against the same defense."""
    from tests.support.digits import DEFENSE

    _, labels, adversarial, _ = deepfool_run
    defense = RandomizedEnsemble(digits.model, DEFENSE, seed=2)
    deepfool_left = float(np.mean(defense.predict(adversarial) == labels))
    print(
        f"\ndefense accuracy: DeepFool {deepfool_left:.1%}, EOT-PGD "
        f"{digits_attacked['eot_accuracy']:.1%}, transferred PGD "
        f"{digits_attacked['transferred_accuracy']:.1%}, clean {digits_attacked['clean']:.1%}"
    )
    assert digits_attacked["eot_accuracy"] <= deepfool_left - 0.4
