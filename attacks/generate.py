"""Adversarial images for a directory of PNGs, in the competition's output format.

One attack (FGSM, PGD, DeepFool, C&W on a scenario's target model, or EOT-PGD on
the full randomized defense) turns every input PNG into an adversarial PNG of the
same name and size. Pixels are rounded to uint8 there, which undoes much of a
minimal-perturbation attack (DeepFool, C&W), so every image is judged twice: as the
float adversarial and as the rounded PNG. `stats.csv` holds, per image, the label
attacked, L2 and L-infinity distances in pixel units and the attacked model's
prediction on both; `settings.json` records what produced them. `--save_float`
keeps the float adversarial as `float/<name>.npy` ([0, 255] pixel units, float32).

Runs resume: an image is done when its PNG, its stats row and (when asked) its
`.npy` exist. After every batch the outputs are written atomically and the stats
file rewritten, so an interrupted run keeps everything it finished.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from tqdm import tqdm

from attacks.carlini_wagner import carlini_wagner_l2
from attacks.catalog import ATTACKS, DEFAULTS, EOT_DEFAULT_CONFIG, SCENARIOS
from attacks.dataset import write_npy_atomic, write_png_atomic
from attacks.deepfool import deepfool
from attacks.eot import EOTPGD
from attacks.fgsm import fgsm
from attacks.pgd import check_linf_budget, pgd
from attacks.scenarios import build_scenario, target_model
from defense.config import load_config
from defense.ensemble import RandomizedEnsemble
from defense.images import (
    InputError,
    ensure_writable_dir,
    read_batch,
    to_model_input,
    write_csv_atomic,
    write_text_atomic,
)
from defense.models import get_spec

STATS_FILE, SETTINGS_FILE, FLOAT_DIR = "stats.csv", "settings.json", "float"
STATS_COLUMNS = (
    "image",
    "label",
    "target",
    "clean_prediction",
    "l2_float",
    "linf_float",
    "prediction_float",
    "success_float",
    "l2_png",
    "linf_png",
    "prediction_png",
    "success_png",
)


def _check_at_least(name: str, value, low: float, *, strictly: bool = False) -> None:
    """`value` must be a finite number >= `low` (> with `strictly`); NaN compares false
    with everything, so it is refused explicitly."""
    if not math.isfinite(value) or value < low or (strictly and value == low):
        raise ValueError(
            f"{name} must be a finite number {'>' if strictly else '>='} {low}, got {value}"
        )


def attack_params(
    attack: str, given: Mapping[str, object], *, max_epsilon: float | None = None
) -> dict[str, object]:
    """The attack's hyper-parameters: its defaults, updated with `given`, validated.

    Without a given epsilon an L-infinity attack uses `max_epsilon` when there is
    one (the competition's budget), else its default.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known attacks: {', '.join(ATTACKS)}")
    defaults = DEFAULTS[attack]
    foreign = sorted(set(given) - set(defaults))
    if foreign:
        raise ValueError(
            f"--{', --'.join(foreign)} does not apply to {attack}"
            + (
                ", which is a minimal-perturbation attack (bound it with --max_epsilon)"
                if "epsilon" in foreign
                else ""
            )
            + f"; {attack} takes --{', --'.join(defaults)}"
        )
    params = {**defaults, **given}
    if "epsilon" in defaults and "epsilon" not in given and max_epsilon is not None:
        params["epsilon"] = max_epsilon
    if attack == "fgsm":
        if not 0 < params["epsilon"] <= 255:
            raise ValueError(
                f"FGSM epsilon must be in (0, 255] pixel units, got {params['epsilon']}"
            )
    elif attack in ("pgd", "eot_pgd"):
        if params["step_size"] is None:
            params["step_size"] = params["epsilon"] / 8
        check_linf_budget(params["epsilon"], params["step_size"], params["steps"])
        if attack == "eot_pgd":
            _check_at_least("samples", params["samples"], 1)
    elif attack == "deepfool":
        _check_at_least("nb_candidate", params["nb_candidate"], 2)
        _check_at_least("overshoot", params["overshoot"], 0)
        _check_at_least("max_iter", params["max_iter"], 1)
    else:
        _check_at_least("confidence", params["confidence"], 0)
        _check_at_least("learning_rate", params["learning_rate"], 0, strictly=True)
        _check_at_least("binary_search_steps", params["binary_search_steps"], 1)
        _check_at_least("max_iterations", params["max_iterations"], 1)
        _check_at_least("initial_const", params["initial_const"], 0, strictly=True)
    return params


@dataclass(frozen=True)
class AttackSettings:
    """Everything that decides a run's adversarial images (recorded in settings.json)."""

    attack: str
    params: dict[str, object] = field(default_factory=dict)
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
    def image_size(self) -> int:
        """The size input images must have: the scenario's (EOT: the model's) input size."""
        size = get_spec(self.model).default_image_size
        if self.attack == "eot_pgd":
            return size
        return build_scenario(self.scenario, input_size=size).input_size


def make_settings(
    attack: str,
    given: Mapping[str, object] | None = None,
    *,
    model: str = "ens_adv_inception_resnet_v2",
    scenario: str = "vanilla",
    config: str | None = None,
    targeted: bool = False,
    max_epsilon: float | None = None,
) -> AttackSettings:
    """Validated settings; a `ValueError` says what is wrong before anything runs."""
    if max_epsilon is not None and not 0 < max_epsilon <= 255:
        raise ValueError(f"--max_epsilon must be in (0, 255] pixel units, got {max_epsilon}")
    params = attack_params(attack, given or {}, max_epsilon=max_epsilon)
    get_spec(model)
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known scenarios: {', '.join(SCENARIOS)}")
    if attack == "eot_pgd":
        if scenario != "vanilla":
            raise ValueError(
                "eot_pgd attacks the randomized defense given by --config; "
                f"--scenario={scenario} does not apply"
            )
        config = config or EOT_DEFAULT_CONFIG
        load_config(config)
    elif config is not None:
        raise ValueError(f"--config applies to eot_pgd only; {attack} attacks --scenario's model")
    if targeted and attack == "deepfool":
        raise ValueError("deepfool is untargeted; --targeted does not apply")
    if max_epsilon is not None and params.get("epsilon", 0) > max_epsilon:
        logging.warning(
            "epsilon %g exceeds --max_epsilon %g: the output is clipped to %g",
            params["epsilon"],
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
    """Refuse inputs that are not size x size: attacks never resize (the bound is per pixel).

    Only the PNG header is read; unreadable files are left for `read_image` to report.
    """
    wrong = []
    for path in paths:
        try:
            with Image.open(path) as image:
                found = image.size
        except (OSError, SyntaxError, ValueError):
            continue
        if found != (size, size):
            wrong.append(f"{path.name} ({found[0]}x{found[1]})")
    if wrong:
        raise InputError(
            f"{len(wrong)} image(s) are not {size}x{size}, the size this attack works on; "
            f"attacks do not resize, resize them beforehand: {', '.join(wrong)}"
        )


def _flat(settings: Mapping[str, object]) -> dict[str, object]:
    """Settings with the attack's hyper-parameters at the top level, for comparison."""
    params = settings.get("params")
    return {
        **{key: value for key, value in settings.items() if key != "params"},
        **(params if isinstance(params, dict) else {}),
    }


class RunRecord:
    """An output directory's stats rows and settings: what is done, and by what run."""

    def __init__(self, output_dir: Path, settings: AttackSettings):
        self.output_dir = output_dir
        self.stats_path = output_dir / STATS_FILE
        self.settings_path = output_dir / SETTINGS_FILE
        self.settings = json.loads(json.dumps(asdict(settings)))
        self.rows = self._read_rows()
        self._check_settings()

    def _read_rows(self) -> dict[str, dict[str, str]]:
        if not self.stats_path.exists():
            return {}
        try:
            with open(
                self.stats_path, newline="", encoding="utf-8", errors="surrogateescape"
            ) as handle:
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != STATS_COLUMNS:
                    raise ValueError(f"{self.stats_path} does not have the columns of a stats file")
                return {row["image"]: row for row in reader}
        except (OSError, csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {self.stats_path}: {error}") from error

    def _check_settings(self) -> None:
        if not self.settings_path.exists():
            if self.rows:
                raise ValueError(
                    f"{self.stats_path} exists without {SETTINGS_FILE}: cannot tell what made "
                    "it; use another --output_dir"
                )
            return
        try:
            recorded = json.loads(self.settings_path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"cannot read {self.settings_path}: {error}") from error
        recorded, current = _flat(recorded), _flat(self.settings)
        differences = [
            f"{key}={recorded.get(key)!r} there, {current.get(key)!r} now"
            for key in sorted(set(recorded) | set(current))
            if recorded.get(key) != current.get(key)
        ]
        if differences:
            raise ValueError(
                f"{self.output_dir} holds the output of another run ({'; '.join(differences)}); "
                "use another --output_dir to keep both"
            )

    def png_path(self, name: str) -> Path:
        return self.output_dir / name

    def npy_path(self, name: str) -> Path:
        return self.output_dir / FLOAT_DIR / f"{name}.npy"

    def is_done(self, name: str, *, save_float: bool) -> bool:
        """Whether image `name` has its PNG, its stats row and, if asked, its `.npy`."""
        return (
            name in self.rows
            and self.png_path(name).is_file()
            and (not save_float or self.npy_path(name).is_file())
        )

    def write_settings(self, notes: Mapping[str, object]) -> None:
        """Record the settings (and informative notes) of the run."""
        text = json.dumps({"settings": self.settings, **notes}, indent=2) + "\n"
        write_text_atomic(self.settings_path, text)

    def add(self, rows: Sequence[dict[str, object]]) -> None:
        """Add or replace rows and rewrite the stats file atomically (settings first, if new)."""
        if not self.settings_path.exists():
            self.write_settings({})
        for row in rows:
            self.rows[str(row["image"])] = {key: str(row[key]) for key in STATS_COLUMNS}
        ordered = [self.rows[name] for name in sorted(self.rows)]
        write_csv_atomic(
            self.stats_path,
            [STATS_COLUMNS, *([row[key] for key in STATS_COLUMNS] for row in ordered)],
        )


class Attacker:
    """One attack on batches of [-1, 1] images, and the model its success is judged on.

    FGSM, PGD, DeepFool and C&W attack the scenario's target model and are judged
    on it; EOT-PGD attacks the randomized defense of its config and is judged by
    that defense (`num_iterations` overrides the config's patterns per image);
    `chunk_size` bounds the EOT patterns per forward pass (default: all samples).
    """

    def __init__(
        self,
        settings: AttackSettings,
        model: keras.Model,
        *,
        seed: int | None = None,
        num_iterations: int | None = None,
        chunk_size: int | None = None,
    ):
        self.settings = settings
        if settings.attack == "eot_pgd":
            config = load_config(settings.config)
            if num_iterations is not None:
                config = config.replace(num_iterations=num_iterations)
            params = dict(settings.params)
            self._eot = EOTPGD(
                model,
                config,
                samples=params.pop("samples"),
                chunk_size=chunk_size,
                seed=seed,
            )
            self._eot_params = params
            defense = RandomizedEnsemble(model, config, seed=None if seed is None else seed + 1)
            self._predict = defense.predict
            self.judged_by = (
                f"the randomized defense ({config.name} config, "
                f"{config.num_iterations} pattern(s) per image, fresh patterns per evaluation)"
            )
        else:
            size = get_spec(settings.model).default_image_size
            target = target_model(model, build_scenario(settings.scenario, input_size=size))
            self._logits = tf.function(target.logits, reduce_retracing=True)
            self._predict = lambda images: np.argmax(self._logits(images).numpy(), axis=1)
            self.judged_by = f"the target model of the {settings.scenario} scenario"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Labels the attacked model gives [-1, 1] images."""
        return np.asarray(self._predict(tf.convert_to_tensor(images, tf.float32)))

    def attack(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Adversarial [-1, 1] images; `labels` are the targets when targeted, else true labels."""
        settings, params = self.settings, self.settings.params
        images = tf.convert_to_tensor(images, tf.float32)
        labels = np.asarray(labels, np.int64)
        targeted = settings.targeted
        if settings.attack == "eot_pgd":
            adversarial = self._eot(images, labels, targeted=targeted, **self._eot_params)
        elif settings.attack == "fgsm":
            adversarial = fgsm(self._logits, images, labels, targeted=targeted, **params)
        elif settings.attack == "pgd":
            adversarial = pgd(self._logits, images, labels, targeted=targeted, **params)
        elif settings.attack == "deepfool":
            adversarial = deepfool(self._logits, images, **params)
        else:
            adversarial = carlini_wagner_l2(
                self._logits, images, labels, targeted=targeted, **params
            )
        return np.asarray(adversarial, np.float32)


def to_outputs(
    original: np.ndarray, adversarial: np.ndarray, max_epsilon: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The float adversarial in [0, 255] pixel units and its uint8 rounding.

    Both lie within `max_epsilon` (L-infinity, pixel units) of the uint8 `original`
    when it is given, as the competition runtime clips them: the float one before
    rounding, the rounded one again after (a fractional budget can round outwards).
    """
    pixels = np.clip((adversarial.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
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
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if settings.targeted and targets is None:
        raise ValueError("a targeted attack needs target classes")
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


def _attack_batch(attacker, names, original, labels, targets, record, save_float):
    """Attack one batch, write its PNGs (and arrays), and return its stats rows."""
    settings = attacker.settings
    clean = attacker.predict(to_model_input(original))
    true = np.array([labels[name] for name in names]) if labels is not None else clean
    goal = np.array([targets[name] for name in names]) if settings.targeted else true
    pixels, rounded = to_outputs(
        original, attacker.attack(to_model_input(original), goal), settings.max_epsilon
    )
    judged = {}
    for kind, images in (("float", pixels), ("png", rounded)):
        predictions = attacker.predict(to_model_input(images))
        success = predictions == goal if settings.targeted else predictions != true
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
