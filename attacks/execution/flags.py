"""The executor flags every long-running command shares, and the executor they name.

--executor=local (default) runs a command's units one after another in its own
process; --executor=ray submits them to Ray: --ray_address an existing cluster
(HOST:PORT or auto), else a local instance; --cpus_per_task and --gpus_per_task
each unit's resources; --max_retries how often a unit whose worker or node died
is run again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from absl import flags

if TYPE_CHECKING:
    from attacks.execution.executor import Executor

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "executor", "local", ["local", "ray"], "Where the units run: this process, or Ray."
)
flags.DEFINE_string(
    "ray_address", None, "With --executor=ray: a cluster's HOST:PORT or auto (default: local)."
)
flags.DEFINE_float("cpus_per_task", 1.0, "With --executor=ray: CPUs per unit.")
flags.DEFINE_float("gpus_per_task", 0.0, "With --executor=ray: GPUs per unit (e.g. 1, 0.5).")
flags.DEFINE_integer(
    "max_retries", 3, "With --executor=ray: reruns of a unit whose worker or node died."
)


def _settings() -> dict[str, Any]:
    return {
        "ray_address": FLAGS.ray_address,
        "cpus_per_task": FLAGS.cpus_per_task,
        "gpus_per_task": FLAGS.gpus_per_task,
        "max_retries": FLAGS.max_retries,
    }


def check_executor_flags() -> None:
    """The executor flags checked without starting anything (raises `ParameterError`):
    to be called with the other flag checks, before any work."""
    from attacks.execution.executor import check_settings

    check_settings(FLAGS.executor, **_settings())


def executor_from_flags() -> Executor:
    """The executor the flags name, started (raises `ParameterError`)."""
    from attacks.execution.executor import make_executor

    return make_executor(FLAGS.executor, **_settings())
