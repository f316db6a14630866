"""The attacks by name, with each attack's kind, target and hyper-parameters.

The registry: a line of `ATTACKS` names an attack's class as `module:Class`. What
the attack is (kind, target, hyper-parameters, whether it can be targeted) comes
from its source, read without importing it (`attacks.declarations`), so that the
command-line flags are defined without importing TensorFlow; `Attack.build`
imports the module and makes the attack. Adding an attack is its module and one
line in `ATTACKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from attacks import kinds
from attacks.declarations import DEFENSE, SCENARIO, Declaration, HyperParameter, declaration
from defense.common.errors import ParameterError

__all__ = [
    "ATTACKS",
    "DEFENSE",
    "SCENARIO",
    "Attack",
    "Declaration",
    "HyperParameter",
    "catalog",
    "get_attack",
]


@dataclass(frozen=True)
class Attack:
    """A catalog line: the attack's name and its class as `module:Class`."""

    name: str
    location: str

    @property
    def declaration(self) -> Declaration:
        """The kind, hyper-parameters and call of the attack, read from its source."""
        return declaration(self.location)

    @property
    def kind(self) -> str:
        return self.declaration.kind

    @property
    def target(self) -> str:
        """What the attack optimises against: SCENARIO (a scenario's target model) or
        DEFENSE (the randomized defense; the class declares `on_defense`)."""
        return self.declaration.target

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyper-parameter with its default."""
        return {param.name: param.default for param in self.declaration.parameters}

    def check_names(self, given: Mapping[str, object]) -> None:
        """Refuse hyper-parameters the attack does not take, naming those it does."""
        known = self.defaults
        foreign = sorted(set(given) - set(known))
        if not foreign:
            return
        hint = ""
        if "epsilon" in foreign and self.kind == kinds.MINIMAL_PERTURBATION:
            hint = f", which is a {kinds.MINIMAL_PERTURBATION} attack (bound it with max_epsilon)"
        raise ParameterError(
            f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to "
            f"{self.name}{hint}; {self.name} takes {', '.join(known)}",
            *foreign,
            *known,
            "max_epsilon",
        )

    def resolved(self, params: Mapping[str, object]) -> dict[str, Any]:
        """Every hyper-parameter as the attack made with `params` uses it (a step size of
        None becomes the step it stands for): what a run records."""
        attack = self.build(params)
        return {name: getattr(attack, name) for name in self.defaults}

    def build(self, params: Mapping[str, object]) -> kinds.Attack:
        """The attack made with `params` (imports its module); a bad value raises there."""
        self.check_names(params)
        module, _, name = self.location.partition(":")
        attack: kinds.Attack = getattr(importlib.import_module(module), name)(**params)
        return attack


def catalog(*attacks: Attack) -> dict[str, Attack]:
    """The attacks by name."""
    return {attack.name: attack for attack in attacks}


ATTACKS = catalog(
    Attack("fgsm", "attacks.fgsm:FGSM"),
    Attack("pgd", "attacks.pgd:PGD"),
    Attack("eot_pgd", "attacks.eot:EOTPGD"),
    Attack("apgd", "attacks.apgd:APGD"),
    Attack("di_fgsm", "attacks.difgsm:DIFGSM"),
    Attack("deepfool", "attacks.deepfool:DeepFool"),
    Attack("cw", "attacks.carlini_wagner:CarliniWagnerL2"),
)


def get_attack(name: str) -> Attack:
    """The catalog entry of attack `name`."""
    if name not in ATTACKS:
        raise ParameterError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")
    return ATTACKS[name]
