"""The one target dispatch (attacks.evaluation.targets): what each attack optimises
against, how it is judged, and the seeds of the directory driver and the paper's cells."""

import numpy as np
import pytest
import tensorflow as tf

from attacks.catalog import get_attack
from attacks.eot import EOTPGD
from attacks.evaluation.generate import Attacker
from attacks.evaluation.scenarios import build_scenario, fixed_defense_model, target_model
from attacks.evaluation.settings import make_settings
from attacks.evaluation.targets import attack_target, judge, next_seed, run_attack
from attacks.fgsm import FGSM
from attacks.paper.compute import attack_function
from attacks.paper.models import ModelEntry
from defense.config import load_config
from defense.ensemble import RandomizedEnsemble
from defense.randomized_defense import RandomizedDefense
from tests.support.tiny_models import TINY_DEFENSE, tiny_classifier

pytestmark = pytest.mark.xdist_group(__name__)

EOT = {"epsilon": 8.0, "steps": 2, "samples": 2}


@pytest.fixture(scope="module")
def model():
    return tiny_classifier(7, kernel=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (3, 12, 12, 3)).astype(np.float32)


LABELS = np.array([1, 4, 6])


def scenario(name):
    return build_scenario(name, input_size=12, out_size=16)


def test_next_seed():
    assert next_seed(3) == 4 and next_seed(None) is None


def test_an_attack_on_the_defense_gets_the_randomized_defense(model, images):
    target = attack_target(model, get_attack("eot_pgd"), config=TINY_DEFENSE, seed=5, chunk_size=1)
    assert isinstance(target, RandomizedDefense)
    assert target.classifier is model and target.config == TINY_DEFENSE
    assert target.chunk_size == 1
    fresh = RandomizedDefense(model, TINY_DEFENSE, chunk_size=1, seed=5)
    np.testing.assert_array_equal(target(images), fresh(images))  # patterns from the seed


@pytest.mark.parametrize(
    ("name", "on_defense", "model_of"),
    [
        ("vanilla", False, target_model),
        ("ensemble_pattern", False, target_model),
        ("one_pixel_padding", True, fixed_defense_model),
        ("one_pixel_padding", False, target_model),
    ],
)
def test_other_attacks_get_the_scenarios_logits(model, name, on_defense, model_of):
    the_scenario = scenario(name)
    target = attack_target(model, get_attack("pgd"), scenario=the_scenario, on_defense=on_defense)
    assert isinstance(target, tf.types.experimental.PolymorphicFunction)
    size = the_scenario.input_size
    x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    expected = model_of(model, the_scenario).logits(x)
    np.testing.assert_allclose(target(x), expected, atol=1e-5)


def test_what_the_dispatch_needs_is_asked_for(model):
    with pytest.raises(ValueError, match="eot_pgd attacks the randomized defense: give its"):
        attack_target(model, get_attack("eot_pgd"), scenario=scenario("vanilla"))
    with pytest.raises(ValueError, match="fgsm attacks a scenario's model: give the scenario"):
        attack_target(model, get_attack("fgsm"), config=TINY_DEFENSE)


def test_judges(model, images):
    logits = attack_target(model, get_attack("fgsm"), scenario=scenario("vanilla"))
    expected = np.argmax(model(images)["logits"].numpy(), axis=1)
    np.testing.assert_array_equal(judge(logits, seed=None)(images), expected)
    defense = RandomizedDefense(model, TINY_DEFENSE, seed=0)
    ensemble = RandomizedEnsemble(model, TINY_DEFENSE, seed=9)
    np.testing.assert_array_equal(judge(defense, seed=9)(images), ensemble.predict(images))


def test_run_attack_gives_float32_arrays(model, images):
    logits = attack_target(model, get_attack("fgsm"), scenario=scenario("vanilla"))
    adversarial = run_attack(FGSM(epsilon=4), logits, images, LABELS)
    assert isinstance(adversarial, np.ndarray) and adversarial.dtype == np.float32
    np.testing.assert_array_equal(adversarial, FGSM(epsilon=4)(logits, images, LABELS))


def eot_on(model, images, seed, config=TINY_DEFENSE, chunk_size=None):
    """EOT-PGD with `EOT` on the defense `config` seeded `seed`."""
    defense = RandomizedDefense(model, config, chunk_size=chunk_size, seed=seed)
    return EOTPGD(**EOT)(defense, images, LABELS).numpy()


def test_the_papers_cells_attack_the_defense_with_seed_plus_one(model, images):
    entry = ModelEntry("tiny", lambda: model, "w", 12, 16, TINY_DEFENSE, [str(i) for i in range(7)])
    run = attack_function(
        model, entry, scenario("vanilla"), "eot_pgd", EOT, on_defense=True, seed=3, chunk_size=1
    )
    np.testing.assert_array_equal(run(images, LABELS), eot_on(model, images, 4, chunk_size=1))


def test_the_directory_driver_attacks_with_seed_and_judges_with_seed_plus_one(model, images):
    settings = make_settings("eot_pgd", EOT)
    config = load_config(settings.config).replace(num_iterations=2)
    attacker = Attacker(settings, model, seed=3, num_iterations=2)
    assert attacker.target.config == config
    np.testing.assert_array_equal(attacker.attack(images, LABELS), eot_on(model, images, 3, config))
    expected = RandomizedEnsemble(model, config, seed=4).predict(images)
    np.testing.assert_array_equal(attacker.predict(images), expected)
