"""The directory driver: adversarial images for a directory of PNGs, in the competition's format.

One attack of the catalog (`attacks.catalog`: FGSM, PGD, DeepFool, C&W on a
scenario's target model, or EOT-PGD on the full randomized defense) turns every
input PNG into an adversarial PNG of the same name and size, written with its
stats row as an adversarial set (`attacks.evaluation.adversarial_set`). Pixels are rounded to
uint8 there, which undoes much of a minimal-perturbation attack (DeepFool, C&W),
so every image is judged twice: as the float adversarial and as the rounded PNG.

Runs resume: an image is done when its PNG, its stats row and (when asked) its
`.npy` exist. After every batch the outputs are written atomically and the stats
file rewritten, so an interrupted run keeps everything it finished.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from attacks.catalog import ATTACKS, DEFENSE
from attacks.evaluation.adversarial_set import (
    FLOAT_DIR,
    RunRecord,
    write_npy_atomic,
    write_png_atomic,
)
from attacks.evaluation.scenarios import build_scenario
from attacks.evaluation.settings import AttackSettings
from attacks.evaluation.targets import attack_target, judge, next_seed, run_attack
from attacks.kinds import Target, succeeded
from defense.common.errors import InputError, ParameterError
from defense.common.files import ensure_writable_dir
from defense.common.images import (
    ImageError,
    check_size,
    from_model_input,
    read_batch,
    to_model_input,
)
from defense.config import load_config
from defense.models import get_spec


def prepare_output_dir(output_dir: str | os.PathLike, input_dir: str | os.PathLike) -> Path:
    """Create the output directory if needed and check that it is writable and not the input."""
    output = Path(output_dir)
    if output.exists() and output.resolve() == Path(input_dir).resolve():
        raise InputError(f"output directory {output} is the input directory; give another one")
    if output.exists() and not output.is_dir():
        raise InputError(f"output path {output} exists and is not a directory")
    try:
        return ensure_writable_dir(output)
    except InputError as error:
        raise InputError(f"output directory {error}") from error


def check_image_sizes(paths: Sequence[Path], size: int) -> None:
    """Refuse inputs that are not size x size, all named in one error: attacks never
    resize (`check_size`). Only the PNG header is read; unreadable files are left for
    `read_image` to report."""
    wrong = []
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, SyntaxError, ValueError):
            continue
        try:
            check_size(width, height, size)
        except ImageError:
            wrong.append(f"{path.name} ({width}x{height})")
    if wrong:
        raise InputError(
            f"{len(wrong)} image(s) are not {size}x{size}, the size this attack works on; "
            f"attacks do not resize, resize them beforehand: {', '.join(wrong)}"
        )


def check_run_options(
    settings: AttackSettings, *, num_iterations: int | None, chunk_size: int | None
) -> None:
    """The options of an attack on the randomized defense apply to such attacks only."""
    on_defense = ", ".join(name for name, entry in ATTACKS.items() if entry.target == DEFENSE)
    for name, value in (("num_iterations", num_iterations), ("chunk_size", chunk_size)):
        if value is None:
            continue
        if settings.entry.target != DEFENSE:
            raise ParameterError(
                f"{name} applies to attacks on the randomized defense ({on_defense}) only", name
            )
        if value < 1:
            raise ParameterError(f"{name} must be >= 1, got {value}", name)


class Attacker:
    """One attack on batches of [-1, 1] images, and the model its success is judged on.

    An attack on a scenario attacks the scenario's target model and is judged on
    it; an attack on the randomized defense (EOT-PGD) attacks
    `RandomizedDefense(model, config)` and is judged by that defense
    (`num_iterations` overrides the config's patterns per image) with patterns of
    its own, from `seed + 1`; `chunk_size` bounds the attacked defense's patterns per
    forward pass (default: all samples). Both come from `attacks.evaluation.targets`.
    """

    def __init__(
        self,
        settings: AttackSettings,
        model: keras.Model,
        *,
        seed: int | None = None,
        num_iterations: int | None = None,
        chunk_size: int | None = None,
    ) -> None:
        check_run_options(settings, num_iterations=num_iterations, chunk_size=chunk_size)
        self.settings = settings
        self._attack = settings.entry.build(settings.params)
        self.target: Target
        if settings.entry.target == DEFENSE:
            assert settings.config is not None, "make_settings gives a defense config"
            config = load_config(settings.config)
            if num_iterations is not None:
                config = config.replace(num_iterations=num_iterations)
            self.target = attack_target(
                model, settings.entry, config=config, seed=seed, chunk_size=chunk_size
            )
            self.judged_by = (
                f"the randomized defense ({config.name} config, "
                f"{config.num_iterations} pattern(s) per image, fresh patterns per evaluation)"
            )
        else:
            size = get_spec(settings.model).default_image_size
            scenario = build_scenario(settings.scenario, input_size=size)
            self.target = attack_target(model, settings.entry, scenario=scenario)
            self.judged_by = f"the target model of the {settings.scenario} scenario"
        self._predict = judge(self.target, seed=next_seed(seed))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels the attacked model gives [-1, 1] images."""
        return np.asarray(self._predict(tf.convert_to_tensor(images, tf.float32)))

    def attack(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Adversarial [-1, 1] images; `labels` are the targets when targeted, else true labels."""
        return run_attack(
            self._attack, self.target, images, labels, targeted=self.settings.targeted
        )


def to_outputs(
    original: np.ndarray, adversarial: np.ndarray, max_epsilon: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The float adversarial in [0, 255] pixel units and its uint8 rounding.

    Both lie within `max_epsilon` (L-infinity, pixel units) of the uint8 `original`
    when it is given, as the competition runtime clips them: the float one before
    rounding, the rounded one again after (a fractional budget can round outwards).
    """
    pixels = from_model_input(adversarial)
    rounded = np.rint(pixels)
    if max_epsilon is not None:
        base = original.astype(np.float32)
        pixels = np.clip(pixels, base - max_epsilon, base + max_epsilon)
        whole = math.floor(max_epsilon)
        rounded = np.clip(np.rint(pixels), base - whole, base + whole)
    return pixels.astype(np.float32), np.clip(rounded, 0, 255).astype(np.uint8)


def distances(original: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L2 and L-infinity distances in pixel units."""
    delta = (pixels.astype(np.float64) - original.astype(np.float64)).reshape(len(original), -1)
    return np.sqrt(np.sum(delta**2, axis=1)), np.max(np.abs(delta), axis=1)


@dataclass
class GenerateResult:
    """Images attacked in this run, skipped as done before, and failed with a reason."""

    generated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def pending_images(paths: Sequence[Path], record: RunRecord, *, save_float: bool) -> list[Path]:
    """The inputs whose outputs are not all there yet."""
    return [path for path in paths if not record.is_done(path.name, save_float=save_float)]


def generate_directory(
    paths: Sequence[Path],
    record: RunRecord,
    attacker: Attacker,
    *,
    labels: Mapping[str, int] | None = None,
    targets: Mapping[str, int] | None = None,
    batch_size: int = 16,
    save_float: bool = False,
    progress: bool = True,
) -> GenerateResult:
    """Attack every input not done yet, batch by batch, writing PNGs, arrays and stats.

    Untargeted attacks without `labels` attack the model's own clean prediction.
    Targeted attacks need `targets`; `labels` then only fill the stats.
    """
    settings = attacker.settings
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}", "batch_size")
    if settings.targeted and targets is None:
        raise ParameterError("a targeted attack needs targets", "targets")
    result = GenerateResult()
    pending = pending_images(paths, record, save_float=save_float)
    waiting = {path.name for path in pending}
    result.skipped = [path.name for path in paths if path.name not in waiting]
    if save_float:
        (record.output_dir / FLOAT_DIR).mkdir(exist_ok=True)
    shown = progress and sys.stderr.isatty()
    with tqdm(total=len(pending), unit="img", disable=not shown, desc=settings.attack) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            names, original = read_batch(
                batch, result.failures, size=settings.image_size, resize=False
            )
            if original is not None:
                record.add(
                    _attack_batch(attacker, names, original, labels, targets, record, save_float)
                )
                result.generated.extend(names)
            bar.update(len(batch))
    return result


def _attack_batch(
    attacker: Attacker,
    names: list[str],
    original: np.ndarray,
    labels: Mapping[str, int] | None,
    targets: Mapping[str, int] | None,
    record: RunRecord,
    save_float: bool,
) -> list[dict[str, object]]:
    """Attack one batch, write its PNGs (and arrays), and return its stats rows."""
    settings = attacker.settings
    clean = attacker.predict(to_model_input(original))
    true = np.array([labels[name] for name in names]) if labels is not None else clean
    goal = true
    if settings.targeted and targets is not None:
        goal = np.array([targets[name] for name in names])
    pixels, rounded = to_outputs(
        original, attacker.attack(to_model_input(original), goal), settings.max_epsilon
    )
    judged = {}
    for kind, images in (("float", pixels), ("png", rounded)):
        predictions = attacker.predict(to_model_input(images))
        success = succeeded(predictions, goal, targeted=settings.targeted)
        l2, linf = distances(original, images)
        judged[kind] = (l2, linf, predictions, success)
    rows = []
    for i, name in enumerate(names):
        if save_float:
            write_npy_atomic(record.npy_path(name), pixels[i])
        write_png_atomic(record.png_path(name), rounded[i])
        row = {
            "image": name,
            "label": int(true[i]),
            "target": int(goal[i]) if settings.targeted else "",
            "clean_prediction": int(clean[i]),
        }
        for kind, (l2, linf, predictions, success) in judged.items():
            row[f"l2_{kind}"] = f"{l2[i]:.4f}"
            row[f"linf_{kind}"] = f"{linf[i]:.4f}"
            row[f"prediction_{kind}"] = int(predictions[i])
            row[f"success_{kind}"] = int(success[i])
        rows.append(row)
    return rows
