"""The attack catalog: what it reads from each attack's source is what the attack takes,
and a new attack is one module plus one catalog line."""

import inspect
import subprocess
import sys
import textwrap

import pytest

from attacks.catalog import (
    ATTACKS,
    DEFENSE,
    SCENARIO,
    Attack,
    get_attack,
)
from attacks.kinds import FIXED_BUDGET, MINIMAL_PERTURBATION
from defense.common.errors import ParameterError


def loaded(entry: Attack):
    module, _, name = entry.location.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_declaration_read_from_source_is_the_classs_signature(name):
    entry = ATTACKS[name]
    attack = loaded(entry)
    parameters = inspect.signature(attack.__init__).parameters
    keyword_only = {
        key: value.default
        for key, value in parameters.items()
        if value.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert entry.defaults == keyword_only
    assert all(
        value.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD
        for key, value in parameters.items()
        if key != "self"
    )
    assert entry.kind == attack.kind
    assert entry.declaration.targeted == attack.targetable
    assert entry.declaration.takes_labels == attack.uses_labels
    assert entry.target == (DEFENSE if attack.on_defense else SCENARIO)
    assert "__call__" not in vars(attack)  # the base class's, the same for every attack
    run = list(inspect.signature(attack.run).parameters)
    assert run == ["self", "target", "images", "labels", "targeted"]
    resolved = entry.resolved({})  # each hyper-parameter kept as the attribute of its name
    assert set(resolved) == set(keyword_only)
    for param in entry.declaration.parameters:
        assert param.help.endswith("."), param
        expected = {float: (int, float), int: (int,), bool: (bool,)}[param.type]
        assert (param.default is None and param.optional) or isinstance(param.default, expected)


def test_kinds_and_targets_are_the_papers_and_foolboxs():
    kinds = {name: entry.kind for name, entry in ATTACKS.items()}
    assert kinds == {
        "fgsm": FIXED_BUDGET,
        "pgd": FIXED_BUDGET,
        "eot_pgd": FIXED_BUDGET,
        "apgd": FIXED_BUDGET,
        "di_fgsm": FIXED_BUDGET,
        "deepfool": MINIMAL_PERTURBATION,
        "cw": MINIMAL_PERTURBATION,
    }
    on_defense = [name for name, entry in ATTACKS.items() if entry.target == DEFENSE]
    assert on_defense == ["eot_pgd", "apgd"]
    assert [name for name, entry in ATTACKS.items() if not entry.declaration.targeted] == [
        "deepfool"
    ]
    assert [name for name, e in ATTACKS.items() if not e.declaration.takes_labels] == ["deepfool"]


def test_the_defaults_are_the_attacks_own():
    assert get_attack("pgd").build({}).step_size == 2.0
    assert get_attack("eot_pgd").build({"epsilon": 8.0}).step_size == 1.0
    assert get_attack("fgsm").defaults == {"epsilon": 2.0}
    assert get_attack("di_fgsm").resolved({"epsilon": 8.0, "steps": 4})["step_size"] == 2.0
    assert get_attack("deepfool").defaults == {
        "nb_candidate": 10,
        "overshoot": 0.02,
        "max_iter": 50,
    }


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("fgsm", {"steps": 3}, "steps does not apply to fgsm; fgsm takes epsilon"),
        ("deepfool", {"epsilon": 4}, "minimal-perturbation attack .bound it with max_epsilon"),
        ("deepfool", {"max_iter": 0}, "max_iter must be >= 1"),
        ("pgd", {"epsilon": 4, "step_size": 5}, r"step_size must be in \(0, epsilon=4\]"),
    ],
)
def test_bad_hyper_parameters_name_the_python_parameters(name, given, message):
    with pytest.raises(ParameterError, match=message):
        get_attack(name).build(given)


def test_unknown_attacks_are_named():
    with pytest.raises(ParameterError, match="unknown attack 'bim'; known attacks: fgsm, pgd"):
        get_attack("bim")


SIXTH = '''
    """An attack added as one module."""

    from attacks.kinds import FixedBudgetAttack, check_epsilon

    DEFAULT_DECAY = 1.0


    class MomentumIterative(FixedBudgetAttack):
        """Iterative FGSM with momentum.

        Hyper-parameters:
            epsilon: L-infinity budget in pixel units.
            decay: Momentum decay,
                per step.
            steps: Iterations.
        """

        def __init__(self, *, epsilon: float = 16.0, decay: float = DEFAULT_DECAY, steps: int = 10):
            check_epsilon(epsilon)
            self.epsilon, self.decay, self.steps = epsilon, decay, steps

        def run(self, target, images, labels, *, targeted):
            return images
'''


def test_a_sixth_attack_is_one_module_and_one_catalog_line(tmp_path, monkeypatch):
    (tmp_path / "sixth_attack.py").write_text(textwrap.dedent(SIXTH))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = Attack("mim", "sixth_attack:MomentumIterative")
    assert entry.kind == FIXED_BUDGET and entry.target == SCENARIO
    assert entry.defaults == {"epsilon": 16.0, "decay": 1.0, "steps": 10}
    assert entry.declaration.parameters[1].help == "Momentum decay, per step."
    assert entry.declaration.targeted and entry.declaration.takes_labels
    assert entry.build({"steps": 3}).steps == 3


SEVENTH = '''
    """An attack on the defense, untargeted, declared by its class attributes."""

    from attacks import kinds


    class OnDefense(kinds.MinimalPerturbationAttack):
        """Returns the images.

        Hyper-parameters:
            steps: Iterations.
        """

        targetable = False
        uses_labels: bool = False
        on_defense = True

        def __init__(self, *, steps: int = 1):
            self.steps = steps

        def run(self, target, images, labels, *, targeted):
            return images
'''


def test_what_an_attack_can_be_called_with_is_read_from_its_class_attributes(tmp_path, monkeypatch):
    (tmp_path / "seventh_attack.py").write_text(textwrap.dedent(SEVENTH))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = Attack("on_defense", "seventh_attack:OnDefense")
    assert entry.kind == MINIMAL_PERTURBATION and entry.target == DEFENSE
    assert not entry.declaration.targeted and not entry.declaration.takes_labels


RUN = "    def run(self, target, images, labels, *, targeted): ...\n"
FIXED = "from attacks.kinds import FixedBudgetAttack\nclass Broken(FixedBudgetAttack):\n"
DESCRIBED = "    '''X.\n\n    Hyper-parameters:\n        a: A.\n    '''\n"
INIT = "    def __init__(self, *, a: int = 1): ...\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (FIXED + DESCRIBED + INIT + RUN + "    def __call__(self): ...", "implement run instead"),
        (FIXED + DESCRIBED + INIT, "needs an __init__ and a run"),
        (
            FIXED + DESCRIBED + INIT + "    def run(self, target, images, *, targeted): ...",
            r"run must be run\(self, target, images, labels, \*, targeted\)",
        ),
        (FIXED + DESCRIBED + "    targetable = 0\n" + INIT + RUN, "targetable must be True or"),
        (
            "class Broken:\n    def __init__(self, *, a: int = 1): ...\n" + RUN,
            "must derive from one of",
        ),
        (
            "from attacks.kinds import FixedBudgetAttack\nclass Broken(FixedBudgetAttack):\n"
            "    '''X.\n\n    Hyper-parameters:\n        a: A.\n    '''\n"
            "    def __init__(self, a: int = 1): ...\n" + RUN,
            "keyword-only",
        ),
        (
            "from attacks.kinds import FixedBudgetAttack\nclass Broken(FixedBudgetAttack):\n"
            "    def __init__(self, *, a: int = 1): ...\n" + RUN,
            "does not describe a",
        ),
        (
            "from attacks.kinds import FixedBudgetAttack\nclass Broken(FixedBudgetAttack):\n"
            "    '''X.\n\n    Hyper-parameters:\n        a: A.\n    '''\n"
            "    def __init__(self, *, a: str = 'x'): ...\n" + RUN,
            "needs a default and one of the annotations",
        ),
    ],
)
def test_a_malformed_attack_module_is_refused_with_the_reason(
    tmp_path, monkeypatch, source, message
):
    module = f"broken_{abs(hash(message))}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        _ = Attack("broken", f"{module}:Broken").declaration


def test_reading_the_catalog_imports_no_tensorflow():
    code = (
        "import sys; from attacks.catalog import ATTACKS; "
        "[entry.declaration for entry in ATTACKS.values()]; "
        "assert 'tensorflow' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_flags_are_the_catalogs_hyper_parameters():
    from absl import flags

    from tests.support.adversarial_helpers import command_module

    command_module("attacks.cli.generate_adversarial")  # defines the flags

    for entry in ATTACKS.values():
        for param in entry.declaration.parameters:
            flag = flags.FLAGS[param.name]
            assert flag.default is None and param.help in flag.help
            assert f"{entry.name} {param.default}" in flag.help


def test_a_shared_flag_gives_each_attacks_own_rule():
    """--step_size's None is epsilon / 8 for PGD and EOT-PGD but epsilon / steps for DI-FGSM."""
    from absl import flags

    from tests.support.adversarial_helpers import command_module

    command_module("attacks.cli.generate_adversarial")  # defines the flags

    text = " ".join(flags.FLAGS["step_size"].help.split())
    assert text.startswith("pgd, eot_pgd: Step in pixel units (None: epsilon / 8). ")
    assert "di_fgsm: Step in pixel units (None: epsilon / steps, I-FGSM's). " in text
    steps = " ".join(flags.FLAGS["steps"].help.split())
    assert steps.startswith("Iterations. Defaults: pgd 10")  # one text, shared: said once
