"""EOT-PGD: exact EOT gradients, budget, reproducibility, and that it breaks the defense."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import pixels_to_model
from attacks.eot import EOTPGD, eot_pgd
from attacks.pgd import pgd
from attacks.scenarios import build_scenario, target_model
from defense.config import DefenseConfig
from defense.ensemble import RandomizedEnsemble
from defense.randomization import resize_and_pad
from tiny_models import tiny_classifier

# The trained digits CNN is built once per worker: keep its tests on one (pytest-xdist).
pytestmark = pytest.mark.xdist_group("digits")

TINY = DefenseConfig(
    name="tiny",
    low=12,
    high=16,
    out_size=16,
    num_iterations=8,
    flip_probability=0.5,
    aux_weight=0.4,
)


@pytest.fixture(scope="module")
def tiny_model():
    """A small two-headed classifier standing in for Inception-ResNet-v2."""
    return tiny_classifier(11, kernel=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


LABELS = np.array([1, 4, 7])


def loop_of_single_patterns(model, config, images, labels, attack):
    """The EOT gradient one (sample, image) at a time, from the patterns `attack` draws."""
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits
    total = np.zeros_like(images)
    for chunk in range(attack.num_chunks):
        patterns = attack.draw_patterns(len(images))
        valid = min(attack.chunk_size, attack.samples - chunk * attack.chunk_size)
        for item in range(valid * len(images)):
            index = item % len(images)
            image = tf.constant(images[index : index + 1])
            with tf.GradientTape() as tape:
                tape.watch(image)
                seen = tf.reverse(image, [2]) if patterns.flip[item] else image
                if config.randomize:
                    size, top, left = (int(f[item]) for f in patterns[:3])
                    seen = resize_and_pad(
                        seen, size, top, left, out_size=config.out_size, method=config.method
                    )
                outputs = model(seen)
                label = labels[index : index + 1]
                loss = cross_entropy(label, outputs["logits"])
                loss += config.aux_weight * cross_entropy(label, outputs["aux_logits"])
            total[index] += tape.gradient(loss, image).numpy()[0]
    return total / attack.samples


@pytest.mark.parametrize(
    ("changes", "chunk_size"),
    [
        ({}, None),
        ({"per_image": True, "method": "bilinear"}, 2),
        ({"randomize": False}, 4),
    ],
)
def test_gradient_is_the_mean_over_single_patterns(tiny_model, images, changes, chunk_size):
    config = TINY.replace(**changes)
    attack = EOTPGD(tiny_model, config, samples=5, chunk_size=chunk_size, seed=3)
    gradient = attack.gradient(images, LABELS).numpy()
    replay = EOTPGD(tiny_model, config, samples=5, chunk_size=chunk_size, seed=3)
    expected = loop_of_single_patterns(tiny_model, config, images, LABELS, replay)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


def test_chunks_are_equal_and_cover_the_samples(tiny_model):
    attack = EOTPGD(tiny_model, TINY, samples=30, chunk_size=8)
    assert (attack.num_chunks, attack.chunk_size) == (4, 8)
    attack = EOTPGD(tiny_model, TINY, samples=30, chunk_size=16)
    assert (attack.num_chunks, attack.chunk_size) == (2, 15)
    assert EOTPGD(tiny_model, TINY, samples=30).num_chunks == 1


def test_flips_are_drawn_only_when_the_config_flips(tiny_model):
    flips = EOTPGD(tiny_model, TINY, samples=400, seed=1).draw_patterns(1).flip.numpy()
    assert 0.4 < flips.mean() < 0.6
    still = EOTPGD(tiny_model, TINY.replace(flip_probability=0.0), samples=400, seed=1)
    assert not still.draw_patterns(1).flip.numpy().any()


def test_perturbation_stays_in_the_ball_and_the_image_range(tiny_model, images):
    adversarial = eot_pgd(
        tiny_model, images, LABELS, config=TINY, epsilon=8, step_size=3, steps=4, samples=4, seed=0
    ).numpy()
    distance = np.abs(adversarial - images).max()
    assert pixels_to_model(5) < distance <= pixels_to_model(8) + 1e-6
    assert adversarial.min() >= -1.0 and adversarial.max() <= 1.0
    assert np.isclose(adversarial, 1.0).any() or np.isclose(adversarial, -1.0).any()


def test_seed_reproduces_and_one_trace_serves_every_step(tiny_model, images):
    def run(seed, **budget):
        attack = EOTPGD(tiny_model, TINY, samples=5, chunk_size=2, seed=seed)
        adversarial = attack(images, LABELS, epsilon=8, steps=3, **budget).numpy()
        return attack, adversarial

    attack, first = run(5)
    np.testing.assert_array_equal(first, run(5)[1])
    assert not np.array_equal(first, run(None)[1])
    attack(images, LABELS, epsilon=4, step_size=1, steps=2, targeted=True)
    assert attack._chunk_gradient.experimental_get_tracing_count() == 1


def test_targeted_raises_the_defense_score_of_the_target(tiny_model, images):
    targets = np.array([2, 2, 9])
    adversarial = eot_pgd(
        tiny_model, images, targets, config=TINY, epsilon=16, steps=5, samples=8, targeted=True
    )
    defense = RandomizedEnsemble(tiny_model, TINY, seed=11)
    before = defense.scores(images)[np.arange(3), targets]
    after = defense.scores(adversarial.numpy())[np.arange(3), targets]
    assert (after > before).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": 0}, "samples"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"epsilon": 0}, "epsilon"),
        ({"step_size": 20}, "step size"),
        ({"steps": 0}, "steps"),
    ],
)
def test_invalid_settings_are_refused(tiny_model, images, options, message):
    with pytest.raises(ValueError, match=message):
        eot_pgd(tiny_model, images, LABELS, config=TINY, **options)


def test_one_label_per_image(tiny_model, images):
    with pytest.raises(ValueError, match="one label per image"):
        eot_pgd(tiny_model, images, LABELS[:2], config=TINY, steps=1, samples=1)


# The digits CNN behind the defense scaled to 32 -> 36 (30 patterns, no flip). At an
# epsilon of 24 pixel units, plain PGD on the undefended model transfers to the defense
# with about 10% accuracy left; EOT-PGD with 10 patterns per step leaves about 2%.
EPSILON, STEP_SIZE, STEPS, SAMPLES, IMAGES = 24, 6.0, 10, 10, 100


@pytest.fixture(scope="module")
def digits_attacked(digits):
    """Test images, labels, EOT-PGD and transferred-PGD adversarials, and defense accuracy."""
    from digits import DEFENSE, INPUT_SIZE, OUT_SIZE

    images, labels = digits.x_test[:IMAGES], digits.y_test[:IMAGES]
    budget = {"epsilon": EPSILON, "step_size": STEP_SIZE, "steps": STEPS}
    eot = eot_pgd(
        digits.model, images, labels, config=DEFENSE, samples=SAMPLES, seed=1, **budget
    ).numpy()
    keras.utils.set_random_seed(1)
    vanilla = target_model(
        digits.model, build_scenario("vanilla", input_size=INPUT_SIZE, out_size=OUT_SIZE)
    )
    transferred = pgd(vanilla.logits, images, labels, **budget).numpy()

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
    from digits import DEFENSE

    _, labels, adversarial, _ = deepfool_run
    defense = RandomizedEnsemble(digits.model, DEFENSE, seed=2)
    deepfool_left = float(np.mean(defense.predict(adversarial) == labels))
    print(
        f"\ndefense accuracy: DeepFool {deepfool_left:.1%}, EOT-PGD "
        f"{digits_attacked['eot_accuracy']:.1%}, transferred PGD "
        f"{digits_attacked['transferred_accuracy']:.1%}, clean {digits_attacked['clean']:.1%}"
    )
    assert digits_attacked["eot_accuracy"] <= deepfool_left - 0.4
