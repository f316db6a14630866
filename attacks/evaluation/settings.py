"""A run's settings: which attack, with which hyper-parameters, on which model and target.

Everything that decides a run's adversarial images, validated before anything
runs and recorded in the output's `settings.json` (`attacks.evaluation.adversarial_set`),
so that a resumed run can be told apart from another one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from absl import logging

from attacks.catalog import DEFENSE, Attack, get_attack
from attacks.evaluation.protocol import EOT_DEFAULT_CONFIG, SCENARIOS
from attacks.evaluation.scenarios import build_scenario
from attacks.kinds import FIXED_BUDGET, check_epsilon
from defense.common.errors import ParameterError
from defense.config import load_config
from defense.models import get_spec


@dataclass(frozen=True)
class AttackSettings:
    """Everything that decides a run's adversarial images (recorded in settings.json)."""

    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = "ens_adv_inception_resnet_v2"
    scenario: str = "vanilla"
    config: str | None = None
    targeted: bool = False
    max_epsilon: float | None = None
    # What the images were attacked with: digests of the labels and targets used (None:
    # the model's own predictions; no targets) and of the checkpoint (`labels_digest`,
    # `checkpoint_digest`). A resumed run must match them all.
    labels: str | None = None
    targets: str | None = None
    checkpoint: str | None = None

    @property
    def entry(self) -> Attack:
        """The attack's catalog entry."""
        return get_attack(self.attack)

    @property
    def image_size(self) -> int:
        """The size input images must have: the scenario's (on the defense: the model's)."""
        size = get_spec(self.model).default_image_size
        if self.entry.target == DEFENSE:
            return size
        return build_scenario(self.scenario, input_size=size).input_size


def attack_params(
    attack: str, given: Mapping[str, Any], *, max_epsilon: float | None = None
) -> dict[str, Any]:
    """The attack's hyper-parameters as it uses them: its defaults updated with `given`,
    validated by making the attack. Without a given epsilon a fixed-budget attack uses
    `max_epsilon` when there is one (the competition's budget), else its default."""
    entry = get_attack(attack)
    entry.check_names(given)
    params = dict(given)
    if entry.kind == FIXED_BUDGET and "epsilon" not in given and max_epsilon is not None:
        params["epsilon"] = max_epsilon
    return entry.resolved(params)


def make_settings(
    attack: str,
    given: Mapping[str, Any] | None = None,
    *,
    model: str = "ens_adv_inception_resnet_v2",
    scenario: str = "vanilla",
    config: str | None = None,
    targeted: bool = False,
    max_epsilon: float | None = None,
) -> AttackSettings:
    """Validated settings; a `ValueError` says what is wrong before anything runs."""
    if max_epsilon is not None:
        check_epsilon(max_epsilon, "max_epsilon")
    entry = get_attack(attack)
    params = attack_params(attack, given or {}, max_epsilon=max_epsilon)
    get_spec(model)
    if scenario not in SCENARIOS:
        raise ParameterError(
            f"unknown scenario {scenario!r}; known scenarios: {', '.join(SCENARIOS)}"
        )
    if entry.target == DEFENSE:
        if scenario != "vanilla":
            raise ParameterError(
                f"{attack} attacks the randomized defense given by config; "
                f"scenario={scenario} does not apply",
                "config",
                "scenario",
            )
        config = config or EOT_DEFAULT_CONFIG
        load_config(config)
    elif config is not None:
        raise ParameterError(
            f"config applies to attacks on the randomized defense only; {attack} attacks "
            "a scenario's target model",
            "config",
        )
    if targeted and not entry.declaration.targeted:
        raise ParameterError(f"{attack} is untargeted; targeted does not apply", "targeted")
    epsilon = params.get("epsilon")
    if max_epsilon is not None and epsilon is not None and epsilon > max_epsilon:
        logging.warning(
            "epsilon %g exceeds max_epsilon %g: the output is clipped to %g",
            epsilon,
            max_epsilon,
            max_epsilon,
        )
    return AttackSettings(attack, params, model, scenario, config, targeted, max_epsilon)


def labels_digest(labels: Mapping[str, int] | None) -> str | None:
    """SHA-256 of the (image, label) pairs a run attacks with, whichever file they came from."""
    if labels is None:
        return None
    text = "".join(f"{name}\t{labels[name]}\n" for name in sorted(labels))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
