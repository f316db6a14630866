"""What the benchmark's figures were measured on, and how its lines are printed.

The CPU's vector and matrix units decide float32's peak and whether bfloat16 can
pay off (`has_bf16_units`), so they are printed first, with the software, the
oneDNN and thread settings and each GPU; `matmul_peak` measures the peak itself.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from attacks.benchmark.options import BenchmarkOptions

# The CPU flags of bfloat16 units (AVX-512 BF16 dot products, AMX tiles).
BF16_UNITS = ("avx512_bf16", "amx_bf16")
_UNITS = ("avx2", "fma", "avx512f", "avx512_fp16", *BF16_UNITS, "amx_tile")


def report(label: str, value: str) -> None:
    """One aligned line of the benchmark's output."""
    print(f"{label + ':':<34}{value}", flush=True)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    found = next((line for line in _cpuinfo().splitlines() if line.startswith("flags")), "")
    return set(found.split(":", 1)[-1].split())


def has_bf16_units(present: set[str] | None = None) -> bool:
    """Whether the CPU (or the flags `present`) has bfloat16 units."""
    return bool((cpu_flags() if present is None else present) & set(BF16_UNITS))


def cpu_features(present: set[str] | None = None) -> str:
    """The vector and matrix units that matter for float32/bfloat16 speed."""
    present = cpu_flags() if present is None else present
    return ", ".join(flag for flag in _UNITS if flag in present) or "none of avx2/avx512/amx"


def set_threads(options: BenchmarkOptions) -> None:
    """Apply the options' TensorFlow thread counts (0 keeps TensorFlow's default)."""
    import tensorflow as tf

    if options.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
    if options.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)


def describe_machine() -> None:
    """What the figures were measured on: OS, CPU, Python, TensorFlow and its CUDA, GPUs."""
    import tensorflow as tf

    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    report("machine", f"{system}; {cpu_name()}, {os.cpu_count()} logical CPUs")
    report("  vector units", cpu_features())
    build = tf.sysconfig.get_build_info()
    cuda = ""
    if build.get("is_cuda_build"):
        cuda = f" (built for CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')})"
    report("software", f"Python {platform.python_version()}, TensorFlow {tf.__version__}{cuda}")
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")
    threads = (
        f"intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
        f"inter-op {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}"
    )
    report("  settings", f"TF_ENABLE_ONEDNN_OPTS={onednn}; threads {threads}")
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        name = details.get("device_name", "unknown GPU")
        if capability:
            name += f", compute capability {capability[0]}.{capability[1]}"
        report(f"  {gpu.name.removeprefix('/physical_device:')}", name)


def matmul_peak(dtype: str, seconds: float = 3.0) -> float:
    """Best GFLOP/s of square matmuls of a few sizes, each repeated for about `seconds`."""
    import tensorflow as tf

    best = 0.0
    for n in (1024, 2048, 3072):
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        matmul = tf.function(tf.linalg.matmul)
        matmul(a, b).numpy()
        repeats, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            result = matmul(a, b)
            repeats += 1
        result.numpy()
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best
