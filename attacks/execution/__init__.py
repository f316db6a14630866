"""Where a command's units of work run: in this process (`LocalExecutor`, the default)
or on a Ray cluster (`RayExecutor`), with the same results; `Resident` values (a
loaded model) are built once per worker process."""

from __future__ import annotations

from defense.common.exports import lazy_exports

_EXPORTS = {
    "Unit": "attacks.execution.executor",
    "Outcome": "attacks.execution.executor",
    "Executor": "attacks.execution.executor",
    "LocalExecutor": "attacks.execution.executor",
    "RayExecutor": "attacks.execution.executor",
    "make_executor": "attacks.execution.executor",
    "Resident": "attacks.execution.resident",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
