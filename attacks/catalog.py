"""The attacks by name, with each attack's kind, target and hyper-parameters.

An attack is a class in its own module (see `attacks.kinds`): its base class is
its kind, its keyword-only `__init__` the one table of its hyper-parameters
(names, types, defaults; validation in its body), the "Hyper-parameters:"
section of its docstring their help, and `targeted` among its call's keywords
says it can be targeted. The catalog reads all this from the module's source
without importing it, so that the command-line flags are defined from it without
importing TensorFlow (`generate_adversarial --help` answers at once); `Attack.build`
imports the module and makes the attack. Adding an attack is its module and one
line in `ATTACKS`.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks.kinds import FIXED_BUDGET, MINIMAL_PERTURBATION
from defense.common.errors import ParameterError

# What an attack optimises against: the scenario's target model (a logits function,
# `attacks.evaluation.scenarios`), or the full randomized defense (`defense.RandomizedDefense`).
SCENARIO, DEFENSE = "scenario", "defense"
_KINDS = {"FixedBudgetAttack": FIXED_BUDGET, "MinimalPerturbationAttack": MINIMAL_PERTURBATION}
_TYPES = {"float": float, "int": int, "bool": bool}


@dataclass(frozen=True)
class HyperParameter:
    """One keyword-only argument of an attack's `__init__`."""

    name: str
    type: type
    default: Any
    help: str
    optional: bool = False  # None is a value (for example step_size: epsilon / 8)


@dataclass(frozen=True)
class Declaration:
    """What an attack's source declares."""

    kind: str
    summary: str
    parameters: tuple[HyperParameter, ...]
    targeted: bool
    takes_labels: bool


@dataclass(frozen=True)
class Attack:
    """A catalog line: the attack's name, its class as `module:Class`, and what it attacks."""

    name: str
    location: str
    target: str = SCENARIO

    @property
    def declaration(self) -> Declaration:
        """The kind, hyper-parameters and call of the attack, read from its source."""
        return _declaration(self.location)

    @property
    def kind(self) -> str:
        return self.declaration.kind

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
        if "epsilon" in foreign and self.kind == MINIMAL_PERTURBATION:
            hint = f", which is a {MINIMAL_PERTURBATION} attack (bound it with max_epsilon)"
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

    def build(self, params: Mapping[str, object]) -> Any:
        """The attack made with `params` (imports its module); a bad value raises there."""
        self.check_names(params)
        module, _, name = self.location.partition(":")
        return getattr(importlib.import_module(module), name)(**params)


def _constants(tree: ast.Module) -> dict[str, Any]:
    """The module's top-level `NAME = <literal>` assignments."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    constants[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return constants


def _literal(node: ast.expr, constants: Mapping[str, Any]) -> Any:
    """A default: a literal, or a constant of the module."""
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return ast.literal_eval(node)


def _parameter_help(docstring: str) -> dict[str, str]:
    """`name: text` lines (continued by deeper-indented lines) of the Hyper-parameters section."""
    helps: dict[str, str] = {}
    lines = docstring.splitlines()
    if "Hyper-parameters:" not in (line.strip() for line in lines):
        return helps
    start = [line.strip() for line in lines].index("Hyper-parameters:") + 1
    current = None
    for line in lines[start:]:
        text = line.strip()
        if not text:
            break
        name, colon, rest = text.partition(":")
        if colon and name.isidentifier() and line.startswith(" " * 4) and " " not in name:
            current = name
            helps[name] = rest.strip()
        elif current is not None:
            helps[current] += " " + text
    return helps


@functools.cache
def _declaration(location: str) -> Declaration:
    """Parse `module:Class` from the module's source (the module is not imported)."""
    module, _, class_name = location.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"attack module {module} not found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    if not classes:
        raise ValueError(f"{module} defines no class {class_name}")
    node = classes[0]
    kinds = [_KINDS[b.id] for b in node.bases if isinstance(b, ast.Name) and b.id in _KINDS]
    if len(kinds) != 1:
        raise ValueError(f"{location} must derive from one of {', '.join(_KINDS)}")
    methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
    if "__init__" not in methods or "__call__" not in methods:
        raise ValueError(f"{location} needs an __init__ and a __call__")
    init, call = methods["__init__"].args, methods["__call__"].args
    if init.args[1:] or init.vararg or init.kwarg:
        raise ValueError(f"{location}: hyper-parameters must be keyword-only")
    constants = _constants(tree)
    docstring = ast.get_docstring(node) or ""
    helps = _parameter_help(docstring)
    parameters = []
    for argument, default in zip(init.kwonlyargs, init.kw_defaults, strict=True):
        annotation = ast.unparse(argument.annotation) if argument.annotation else ""
        base, _, rest = annotation.partition(" | ")
        if base not in _TYPES or rest not in ("", "None") or default is None:
            raise ValueError(
                f"{location}: hyper-parameter {argument.arg} needs a default and one of the "
                f"annotations {', '.join(_TYPES)} (optionally | None), got {annotation!r}"
            )
        if argument.arg not in helps:
            raise ValueError(f"{location}: its docstring does not describe {argument.arg}")
        parameters.append(
            HyperParameter(
                name=argument.arg,
                type=_TYPES[base],
                default=_literal(default, constants),
                help=helps[argument.arg],
                optional=bool(rest),
            )
        )
    return Declaration(
        kind=kinds[0],
        summary=docstring.splitlines()[0] if docstring else class_name,
        parameters=tuple(parameters),
        targeted="targeted" in [a.arg for a in call.kwonlyargs],
        takes_labels=len(call.args) >= 4,
    )


def catalog(*attacks: Attack) -> dict[str, Attack]:
    """The attacks by name."""
    return {attack.name: attack for attack in attacks}


ATTACKS = catalog(
    Attack("fgsm", "attacks.fgsm:FGSM"),
    Attack("pgd", "attacks.pgd:PGD"),
    Attack("eot_pgd", "attacks.eot:EOTPGD", target=DEFENSE),
    Attack("deepfool", "attacks.deepfool:DeepFool"),
    Attack("cw", "attacks.carlini_wagner:CarliniWagnerL2"),
)


def get_attack(name: str) -> Attack:
    """The catalog entry of attack `name`."""
    if name not in ATTACKS:
        raise ParameterError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")
    return ATTACKS[name]
