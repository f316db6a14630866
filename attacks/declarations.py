"""What an attack's source declares, read without importing it.

An attack is a class in its own module (see `attacks.kinds`): the kind it derives
from (`FixedBudgetAttack` or `MinimalPerturbationAttack`), its keyword-only
`__init__` the one table of its hyper-parameters (names, types, defaults;
validation in its body), the "Hyper-parameters:" section of its docstring their
help, its `run(self, target, images, labels, *, targeted)` the attack, and the
class attributes `targetable`, `uses_labels` and `on_defense` (`attacks.kinds.Attack`)
what it can be called with. Attack modules import TensorFlow and cleverhans, so
this reads all that from the module's source: the command-line flags are defined
from it without importing TensorFlow (`generate_adversarial --help` answers at once).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks.kinds import FIXED_BUDGET, MINIMAL_PERTURBATION

# What an attack optimises against: the scenario's target model (a logits function,
# `attacks.evaluation.scenarios`), or the full randomized defense (`defense.RandomizedDefense`).
SCENARIO, DEFENSE = "scenario", "defense"
_KINDS = {"FixedBudgetAttack": FIXED_BUDGET, "MinimalPerturbationAttack": MINIMAL_PERTURBATION}
_TYPES = {"float": float, "int": int, "bool": bool}
# The class attributes an attack may declare, with the base class's values.
_FLAGS = {"targetable": True, "uses_labels": True, "on_defense": False}
_RUN_ARGUMENTS = ["self", "target", "images", "labels"]


@dataclass(frozen=True)
class HyperParameter:
    """One keyword-only argument of an attack's `__init__`."""

    name: str
    type: type
    default: Any
    help: str
    optional: bool = False  # None is a value (for example step_size: the attack's own rule)


@dataclass(frozen=True)
class Declaration:
    """What an attack's source declares: `targeted` says it can be targeted,
    `takes_labels` that it uses the labels (DeepFool only checks them), `target`
    what it attacks (SCENARIO or DEFENSE)."""

    kind: str
    summary: str
    parameters: tuple[HyperParameter, ...]
    targeted: bool
    takes_labels: bool
    target: str = SCENARIO


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


def _kind(node: ast.ClassDef, location: str) -> str:
    """The kind the class derives from (`Kind` or `module.Kind` among its bases)."""
    names = [
        base.id if isinstance(base, ast.Name) else base.attr
        for base in node.bases
        if isinstance(base, ast.Name | ast.Attribute)
    ]
    kinds = [_KINDS[name] for name in names if name in _KINDS]
    if len(kinds) != 1:
        raise ValueError(f"{location} must derive from one of {', '.join(_KINDS)}")
    return kinds[0]


def _flags(node: ast.ClassDef, location: str) -> dict[str, bool]:
    """The class attributes of `_FLAGS` the class body sets (to True or False), over the
    base class's values."""
    flags = dict(_FLAGS)
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _FLAGS:
            if not (isinstance(value, ast.Constant) and isinstance(value.value, bool)):
                raise ValueError(f"{location}: {target.id} must be True or False")
            flags[target.id] = value.value
    return flags


def _check_methods(node: ast.ClassDef, location: str) -> ast.arguments:
    """The arguments of `__init__`, after checking that the class implements `run` as the
    base class calls it and leaves `__call__` to the base class."""
    methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
    if "__call__" in methods:
        raise ValueError(f"{location}: __call__ is the base class's; implement run instead")
    if "__init__" not in methods or "run" not in methods:
        raise ValueError(f"{location} needs an __init__ and a run")
    run = methods["run"].args
    if [a.arg for a in run.args] != _RUN_ARGUMENTS or "targeted" not in [
        a.arg for a in run.kwonlyargs
    ]:
        raise ValueError(f"{location}: run must be run(self, target, images, labels, *, targeted)")
    init = methods["__init__"].args
    if init.args[1:] or init.vararg or init.kwarg:
        raise ValueError(f"{location}: hyper-parameters must be keyword-only")
    return init


def _parameters(
    init: ast.arguments, helps: Mapping[str, str], constants: Mapping[str, Any], location: str
) -> tuple[HyperParameter, ...]:
    """The keyword-only arguments of `__init__` with their types, defaults and help."""
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
    return tuple(parameters)


@functools.cache
def declaration(location: str) -> Declaration:
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
    kind = _kind(node, location)
    init = _check_methods(node, location)
    flags = _flags(node, location)
    docstring = ast.get_docstring(node) or ""
    return Declaration(
        kind=kind,
        summary=docstring.splitlines()[0] if docstring else class_name,
        parameters=_parameters(init, _parameter_help(docstring), _constants(tree), location),
        targeted=flags["targetable"],
        takes_labels=flags["uses_labels"],
        target=DEFENSE if flags["on_defense"] else SCENARIO,
    )
