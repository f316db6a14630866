"""The robustness card: an AutoAttack / RobustBench style evaluation of the randomized
defense, in one call (`evaluate_robustness`), as JSON and as Markdown.

The card holds the clean accuracy and each attack's robust accuracy on the defense
as deployed (mean and spread over redraws, and any-fooled), what each attack cost
per image, the convergence sweeps of APGD-EOT over EOT samples and iterations with
the converged point marked, the cosine of independent EOT gradients against K, the
budget sweep up to an unbounded epsilon, and the settings that decide the numbers
(budget, redraws, root seed, versions, checkpoint digest).

The JSON uses RobustBench's field names where they exist, in its units (`clean_acc`
and `autoattack_acc` as percentage strings of the mean accuracy, `eps` as "16/255",
`number_forward_passes` the defense's passes per classification); the card itself,
in fractions, is under `robustness_card`, from which `Card.from_json` reads it back.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from attacks.robustness.convergence import (
    EPSILONS,
    ITERATIONS,
    SAMPLES,
    TOLERANCE,
    Sweep,
    budget_sweep,
    check_counts,
    check_epsilons,
    check_tolerance,
    gradient_cosine,
    iterations_sweep,
    samples_sweep,
)
from attacks.robustness.judgement import (
    Accuracy,
    checked_inputs,
    derive_seed,
    keep_strongest,
    redraw_accuracy,
    root_seed,
)
from attacks.robustness.protocol import ATTACKS, AttackResult, Budget, evaluate_attack
from defense.config import DefenseConfig

PACKAGE = "randomization-defense"
# The attack whose accuracy is RobustBench's `autoattack_acc`.
AUTOATTACK = "autoattack_rand"
# The steps of `evaluate_robustness`, in order, as its `progress` callback names them.
STEPS = (
    "clean",
    *ATTACKS,
    "strongest",
    "samples_sweep",
    "iterations_sweep",
    "gradient_cosine",
    "budget_sweep",
)


@dataclass(frozen=True)
class Card:
    """Everything one robustness evaluation found, and the settings behind it.

    strongest: per image the strongest of the card's attacks (fewest redraws correct
    on the attacks' judgement), judged again on fresh redraws.
    """

    name: str
    budget: Budget
    seed: int
    num_iterations: int
    images: int
    tolerance: float
    clean: Accuracy
    attacks: tuple[AttackResult, ...]
    strongest: Accuracy
    samples_sweep: Sweep
    iterations_sweep: Sweep
    gradient_cosine: tuple[tuple[int, float], ...]
    budget_sweep: Sweep
    versions: dict[str, str]
    checkpoint_sha256: str | None = None

    def attack(self, name: str) -> AttackResult:
        """The result of attack `name`."""
        return next(result for result in self.attacks if result.name == name)

    def to_json(self) -> str:
        """RobustBench's fields, then the whole card under `robustness_card`."""
        fields = {
            "name": self.name,
            "threat_model": "Linf",
            "eps": f"{self.budget.epsilon:g}/255",
            "clean_acc": f"{100 * self.clean.mean:.2f}",
            "autoattack_acc": f"{100 * self.attack(AUTOATTACK).accuracy.mean:.2f}",
            "number_forward_passes": self.num_iterations,
            "robustness_card": dataclasses.asdict(self),
        }
        return json.dumps(fields, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Card:
        """The card `to_json` wrote."""
        card = json.loads(text)["robustness_card"]
        return cls(
            **{
                **card,
                "budget": Budget(**card["budget"]),
                "clean": Accuracy(**card["clean"]),
                "attacks": tuple(_attack_result(result) for result in card["attacks"]),
                "strongest": Accuracy(**card["strongest"]),
                "samples_sweep": _sweep(card["samples_sweep"]),
                "iterations_sweep": _sweep(card["iterations_sweep"]),
                "gradient_cosine": tuple((int(k), c) for k, c in card["gradient_cosine"]),
                "budget_sweep": _sweep(card["budget_sweep"]),
            }
        )

    def to_markdown(self) -> str:
        """The card as Markdown tables."""
        return "\n".join(_markdown(self)) + "\n"


def _attack_result(fields: dict[str, Any]) -> AttackResult:
    return AttackResult(**{**fields, "accuracy": Accuracy(**fields["accuracy"])})


def _sweep(fields: dict[str, Any]) -> Sweep:
    return Sweep(
        parameter=fields["parameter"],
        values=tuple(fields["values"]),
        accuracies=tuple(Accuracy(**accuracy) for accuracy in fields["accuracies"]),
        converged_at=fields["converged_at"],
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _cells(accuracy: Accuracy) -> list[str]:
    """The robust accuracy (mean ± std over redraws) and any-fooled accuracy cells."""
    mean, std = _percent(accuracy.mean), _percent(accuracy.std)
    return [f"{mean} ± {std}", _percent(accuracy.any_fooled)]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


def _sweep_markdown(sweep: Sweep, tolerance: float) -> list[str]:
    rows = [
        [f"{value:g}", *_cells(accuracy), "converged" if value == sweep.converged_at else ""]
        for value, accuracy in zip(sweep.values, sweep.accuracies, strict=True)
    ]
    table = _table((sweep.parameter, "robust accuracy", "any-fooled", ""), rows)
    if sweep.converged_at is None:
        verdict = (
            f"**Not converged**: no {sweep.parameter} from which every larger one moves the "
            f"accuracy by less than {_percent(tolerance)}; the attack may still be too weak."
        )
    else:
        verdict = (
            f"Converged at {sweep.parameter} = {sweep.converged_at:g}: larger values move the "
            f"accuracy by less than {_percent(tolerance)}."
        )
    return [*table, verdict, ""]


def _markdown(card: Card) -> list[str]:
    budget = card.budget
    lines = [
        f"# Robustness card: {card.name}",
        "",
        f"L-infinity, eps = {budget.epsilon:g}/255 ({budget.epsilon:g} pixel units), on "
        f"{card.images} images. "
        f"Judged on the defense as deployed ({card.num_iterations} patterns per "
        f"classification) over {budget.redraws} redraws: mean ± std of the per-redraw "
        "accuracy, and any-fooled accuracy (correct in every redraw). Attacks: "
        f"{budget.iterations} iterations, {budget.samples} EOT samples per step. "
        f"Seed {card.seed}.",
        "",
        "## Accuracy",
        "",
    ]
    rows = [["clean", *_cells(card.clean), "", "", ""]]
    rows += [
        [
            result.name,
            *_cells(result.accuracy),
            str(result.forward_passes),
            str(result.backward_passes),
            f"{result.seconds:.1f}",
        ]
        for result in card.attacks
    ]
    rows.append(["strongest per image", *_cells(card.strongest), "", "", ""])
    header = ["attack", "robust accuracy", "any-fooled", "forward / image"]
    header += ["backward / image", "seconds"]
    lines += _table(header, rows)
    lines += [
        "Passes per image are pattern passes from the attacks' hyper-parameters (upper "
        "bounds); forward passes include the judgement's redraws x patterns.",
        "",
        "## Convergence of APGD-EOT",
        "",
        f"### EOT samples ({budget.iterations} iterations)",
        "",
        *_sweep_markdown(card.samples_sweep, card.tolerance),
        f"### Iterations ({budget.samples} EOT samples)",
        "",
        *_sweep_markdown(card.iterations_sweep, card.tolerance),
        "## Gradient sanity",
        "",
        "Cosine similarity of two independent K-sample EOT gradients, mean over images "
        "(rises towards 1 for a consistent gradient).",
        "",
        *_table(("K", "cosine"), ((str(k), f"{c:.3f}") for k, c in card.gradient_cosine)),
        "## Budget sweep",
        "",
    ]
    sweep = card.budget_sweep
    rows = [
        [f"{value:g}", *_cells(accuracy)]
        for value, accuracy in zip(sweep.values, sweep.accuracies, strict=True)
    ]
    lines += _table(("epsilon", "robust accuracy", "any-fooled"), rows)
    if sweep.accuracies[-1].mean == 0:
        lines.append(f"Reaches 0 % at epsilon = {sweep.values[-1]:g}.")
    else:
        lines.append(
            f"**Does not reach 0 %** by epsilon = {sweep.values[-1]:g}: an unbounded attack "
            "should; the attack is failing, not the defense winning."
        )
    lines += ["", "## Settings", ""]
    settings = {
        **{f"budget.{key}": value for key, value in dataclasses.asdict(budget).items()},
        "tolerance": card.tolerance,
        "checkpoint sha256": card.checkpoint_sha256,
        **card.versions,
    }
    lines += _table(("setting", "value"), ((key, str(value)) for key, value in settings.items()))
    return lines


def versions() -> dict[str, str]:
    """The versions that decide the numbers: Python, TensorFlow, Keras, NumPy, this package."""
    import tensorflow as tf

    try:
        package = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        package = "not installed"
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        PACKAGE: package,
    }


def evaluate_robustness(
    model: keras.Model,
    config: DefenseConfig,
    images: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    epsilon: float = 16.0,
    redraws: int = 5,
    seed: int | None = None,
    iterations: int = 100,
    samples: int = 20,
    step_size: float | None = None,
    sweep_samples: Sequence[int] = SAMPLES,
    sweep_iterations: Sequence[int] = ITERATIONS,
    cosine_samples: Sequence[int] = SAMPLES,
    epsilons: Sequence[float] = EPSILONS,
    tolerance: float = TOLERANCE,
    chunk_size: int | None = None,
    judge_chunk_size: int = 16,
    name: str | None = None,
    checkpoint_sha256: str | None = None,
    progress: Callable[[str], object] | None = None,
) -> Card:
    """The robustness card of `model` behind `config` on `images` (float [-1, 1] NHWC)
    with their true `labels`.

    `epsilon` and `step_size` (PGD's, None: epsilon / 8) are pixel units; attacks run
    `iterations` steps of `samples` EOT patterns (`chunk_size` patterns per image per
    pass); every result is judged over `redraws` redraws of the deployed defense
    (`judge_chunk_size` items per pass). The sweeps' sizes are `sweep_samples`,
    `sweep_iterations`, `cosine_samples` and `epsilons`. Every seed is derived from
    `seed` (default: a fresh one from OS entropy, recorded in the card).
    `progress`, if given, is called with each of `STEPS` as it finishes (for a
    progress bar: the card is one long call).
    """
    done = progress or (lambda step: None)
    budget = Budget(
        epsilon=epsilon,
        iterations=iterations,
        samples=samples,
        step_size=step_size,
        redraws=redraws,
        chunk_size=chunk_size,
        judge_chunk_size=judge_chunk_size,
    )
    check_tolerance(tolerance)
    check_counts("sweep_samples", sweep_samples)
    check_counts("sweep_iterations", sweep_iterations)
    check_counts("cosine_samples", cosine_samples)
    check_epsilons(epsilons)
    images, labels = checked_inputs(model, config, images, labels)
    root = root_seed(seed)
    judge_seed = derive_seed(root, "judgement")
    clean = redraw_accuracy(
        model,
        config,
        images,
        labels,
        redraws=redraws,
        seed=judge_seed,
        chunk_size=judge_chunk_size,
    )
    done("clean")
    evaluated = []
    for attack in ATTACKS:
        evaluated.append(
            evaluate_attack(
                attack, model, config, images, labels, budget, seed=root, judge_seed=judge_seed
            )
        )
        done(attack)
    picked = keep_strongest(
        [found.adversarials for found in evaluated], [found.judged for found in evaluated]
    )
    strongest = redraw_accuracy(
        model,
        config,
        picked,
        labels,
        redraws=redraws,
        seed=derive_seed(root, "strongest"),
        chunk_size=judge_chunk_size,
    )
    done("strongest")
    sweeps_seed = derive_seed(root, "convergence")
    sweep_of_samples = samples_sweep(
        model,
        config,
        images,
        labels,
        budget,
        samples=sweep_samples,
        tolerance=tolerance,
        seed=sweeps_seed,
        judge_seed=judge_seed,
    )
    done("samples_sweep")
    sweep_of_iterations = iterations_sweep(
        model,
        config,
        images,
        labels,
        budget,
        iterations=sweep_iterations,
        tolerance=tolerance,
        seed=sweeps_seed,
        judge_seed=judge_seed,
    )
    done("iterations_sweep")
    cosines = gradient_cosine(
        model,
        config,
        images,
        labels,
        samples=cosine_samples,
        seed=derive_seed(root, "cosine"),
        chunk_size=chunk_size,
    )
    done("gradient_cosine")
    sweep_of_budgets = budget_sweep(
        model,
        config,
        images,
        labels,
        budget,
        epsilons=epsilons,
        seed=sweeps_seed,
        judge_seed=judge_seed,
    )
    done("budget_sweep")
    return Card(
        name=config.name if name is None else name,
        budget=budget,
        seed=root,
        num_iterations=config.num_iterations,
        images=len(images),
        tolerance=tolerance,
        clean=clean.summary(),
        attacks=tuple(found.result for found in evaluated),
        strongest=strongest.summary(),
        samples_sweep=sweep_of_samples,
        iterations_sweep=sweep_of_iterations,
        gradient_cosine=cosines,
        budget_sweep=sweep_of_budgets,
        versions=versions(),
        checkpoint_sha256=checkpoint_sha256,
    )
