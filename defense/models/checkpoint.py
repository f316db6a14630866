"""Strict reading of TF1 name-based (TF-Slim) checkpoints into Keras weights.

A checkpoint entry is either a model variable, which must match a model weight
by name and shape, or training bookkeeping, which is ignored by rule:
`global_step`, Adam's power accumulators, and per-variable slots or shadows
(`<variable>/<Optimizer or ExponentialMovingAverage>`). Anything else that does
not match is an error listing every missing, unexpected and mis-shaped name.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

BOOKKEEPING_NAMES = frozenset({"global_step", "beta1_power", "beta2_power"})
_SLOT_SUFFIX = re.compile(
    r"/(ExponentialMovingAverage|RMSProp(_1)?|Momentum|Adam(_1)?|Adagrad|Ftrl(_1)?|Adadelta(_1)?)$"
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


def is_bookkeeping(name: str) -> bool:
    """True for checkpoint entries that are training state, not model variables."""
    return name in BOOKKEEPING_NAMES or bool(_SLOT_SUFFIX.search(name))


def resolve_prefix(path: str | os.PathLike) -> str:
    """Turn a user-given checkpoint path (prefix, .index/.data file, V1 file) into a prefix."""
    text = str(path)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = re.sub(r"\.data-\d{5}-of-\d{5}$", "", text)
    prefix = Path(text)
    if prefix.is_dir():
        raise CheckpointError(
            f"{path} is a directory; give the checkpoint prefix inside it "
            f"(for example {prefix / 'model.ckpt'})"
        )
    if not (Path(f"{text}.index").is_file() or prefix.is_file()):
        raise CheckpointError(f"no checkpoint at {path}: neither {text}.index nor {text} exists")
    return text


def checkpoint_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's `.index` file (a V1 checkpoint: of the file itself).

    The index holds every tensor's name, shape, offset and CRC32C, so the digest names
    the weights without reading the data files.
    """
    prefix = resolve_prefix(path)
    index = Path(f"{prefix}.index")
    with open(index if index.is_file() else prefix, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def open_checkpoint(path: str | os.PathLike) -> tf.train.CheckpointReader:
    """Open a V1 or V2 name-based checkpoint with a clear error when it is not one."""
    prefix = resolve_prefix(path)
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable TensorFlow checkpoint "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error


def model_shapes(reader: tf.train.CheckpointReader) -> dict[str, tuple[int, ...]]:
    """Shapes of the model variables in a checkpoint, bookkeeping entries left out."""
    return {
        name: tuple(shape)
        for name, shape in reader.get_variable_to_shape_map().items()
        if not is_bookkeeping(name)
    }


@dataclass
class ManifestDiff:
    """How a checkpoint's variables differ from what a model expects."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)

    def describe(self, limit: int = 20) -> str:
        """Human-readable listing, at most `limit` names per category."""
        lines = []
        for title, items in (
            ("missing from the checkpoint", self.missing),
            ("unexpected in the checkpoint", self.unexpected),
        ):
            if items:
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {name}" for name in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        if self.mis_shaped:
            lines.append(f"{len(self.mis_shaped)} with the wrong shape (model vs checkpoint):")
            lines += [
                f"  {name}: {list(want)} vs {list(got)}"
                for name, want, got in self.mis_shaped[:limit]
            ]
            if len(self.mis_shaped) > limit:
                lines.append(f"  ... and {len(self.mis_shaped) - limit} more")
        return "\n".join(lines)


def compare_manifest(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> ManifestDiff:
    """Compare expected variable shapes with a checkpoint's."""
    return ManifestDiff(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        mis_shaped=sorted(
            (name, tuple(expected[name]), tuple(found[name]))
            for name in set(expected) & set(found)
            if tuple(expected[name]) != tuple(found[name])
        ),
    )


def assign_from_checkpoint(
    variables: Mapping[str, tf.Variable], path: str | os.PathLike, *, model_name: str = "model"
) -> None:
    """Assign every variable from the checkpoint, strictly (all consumed, all assigned)."""
    reader = open_checkpoint(path)
    expected = {name: tuple(var.shape) for name, var in variables.items()}
    diff = compare_manifest(expected, model_shapes(reader))
    if diff:
        raise CheckpointError(f"checkpoint {path} does not fit {model_name}:\n{diff.describe()}")
    dtypes = reader.get_variable_to_dtype_map()
    not_float = sorted(name for name in variables if not dtypes[name].is_floating)
    if not_float:
        listed = ", ".join(f"{name} ({dtypes[name].name})" for name in not_float[:5])
        raise CheckpointError(
            f"checkpoint {path} does not fit {model_name}: {len(not_float)} weight(s) are not "
            f"floating point: {listed}{' ...' if len(not_float) > 5 else ''}"
        )
    for name, variable in variables.items():
        # Cast first: a float64 1e300 is finite, but infinite as float32.
        with np.errstate(over="ignore"):
            value = read_tensor(reader, name, path).astype(variable.dtype)
        if not np.all(np.isfinite(value)):
            raise CheckpointError(
                f"checkpoint {path}: {name} holds NaN or infinite values (as {variable.dtype})"
            )
        variable.assign(value)


def read_tensor(
    reader: tf.train.CheckpointReader, name: str, path: str | os.PathLike
) -> np.ndarray:
    """One tensor's value; a short or damaged data file becomes a `CheckpointError`."""
    try:
        return reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: reading {name} failed "
            f"({_first_line(error)}); download it again"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
