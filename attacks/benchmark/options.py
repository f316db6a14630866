"""What one benchmark run measures (`BenchmarkOptions`) and the flags that spell it.

The library's functions take a `BenchmarkOptions`; `scripts/benchmark_defense.py`
defines the flags with `define_flags` and reads them back with `options_from_flags`.
Neither imports TensorFlow, so `--help` and flag errors are immediate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from absl import flags

from attacks.kinds import check_count
from defense.common.errors import ParameterError

DEFAULT_MODEL = "ens_adv_inception_resnet_v2"


@dataclass(frozen=True)
class BenchmarkOptions:
    """One run's settings; the defaults are the command's (`define_flags`)."""

    model: str = DEFAULT_MODEL
    images: int = 16
    batch_size: int = 16
    num_iterations: int = 30
    chunk_size: int = 16
    baseline: bool = True
    xla: bool = True
    digits: bool = True
    # None: bfloat16 is measured where the CPU has bfloat16 units (`machine.has_bf16_units`).
    bfloat16: bool | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    attacks: bool = False
    executors: bool = False
    memory: bool = False
    memory_images: tuple[int, ...] = (16, 160)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("images", "batch_size", "num_iterations", "chunk_size"):
            check_count(name, getattr(self, name), 1)
        for name in ("intra_op_threads", "inter_op_threads", "seed"):
            check_count(name, getattr(self, name), 0)
        if not self.memory_images:
            raise ParameterError("memory_images must name at least one number", "memory_images")
        for count in self.memory_images:
            check_count("memory_images", count, 1)


_DEFAULTS = BenchmarkOptions()


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define one flag per `BenchmarkOptions` field, with its default, on `flag_values`."""
    d = _DEFAULTS
    flags.DEFINE_string("model", d.model, "Registry model name.", flag_values=flag_values)
    flags.DEFINE_integer(
        "images",
        d.images,
        "Images to classify per measurement.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "batch_size",
        d.batch_size,
        "Images per batch (the original used 16).",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_iterations",
        d.num_iterations,
        "Patterns per image.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "chunk_size",
        d.chunk_size,
        "Patterns per forward pass in our ensemble.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "baseline",
        d.baseline,
        "Time the original entry's loop (the fair baseline).",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "xla", d.xla, "Also time ours with XLA (jit_compile=True).", flag_values=flag_values
    )
    flags.DEFINE_boolean(
        "digits",
        d.digits,
        "Measure early exit's saving on the trained digits CNN.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "bfloat16",
        d.bfloat16,
        "Also time bfloat16 and compare its labels (default: where the CPU has bfloat16 units, "
        "avx512_bf16 or amx_bf16).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "intra_op_threads",
        d.intra_op_threads,
        "TensorFlow intra-op threads (0: its default).",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "inter_op_threads",
        d.inter_op_threads,
        "TensorFlow inter-op threads (0: its default).",
        lower_bound=0,
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "attacks",
        d.attacks,
        "Time the batched attacks against un-batched loops.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "executors",
        d.executors,
        "Time a digits robustness card and a toy competition on the local executor against "
        "Ray on this machine; project the full competition and Tables 1-6 on N devices.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "memory",
        d.memory,
        "Measure the runner's peak RSS for --memory_images.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "memory_images",
        [str(count) for count in d.memory_images],
        "Numbers of images for --memory.",
        flag_values=flag_values,
    )
    flags.register_validator(
        "memory_images",
        _positive_counts,
        "must be a comma-separated list of positive integers",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", d.seed, "Seed for images, weights and patterns.", flag_values=flag_values
    )


def _positive_counts(values: list[str]) -> bool:
    return bool(values) and all(value.strip().isdigit() and int(value) > 0 for value in values)


def options_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> BenchmarkOptions:
    """The parsed flags of `define_flags` as a `BenchmarkOptions`."""
    values: dict[str, Any] = {
        field.name: flag_values[field.name].value for field in fields(BenchmarkOptions)
    }
    values["memory_images"] = tuple(int(count) for count in values["memory_images"])
    return BenchmarkOptions(**values)


def check_model(name: str) -> None:
    """`name` must be a registry model (imports the model zoo, so TensorFlow)."""
    from defense.models.registry import REGISTRY

    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise ParameterError(f"model must be one of {known}; got {name!r}", "model")
