"""Executors: where a command's units of work run, in this process or on a Ray cluster.

A `Unit` is a key and a module-level function with its (picklable) arguments; an
executor runs units and yields an `Outcome` per unit as each finishes, with the
worker, the node, the wall time and the attempts it took. The driver alone writes
shared results (a command's results file, its cells, its scores): workers return
theirs. Seeds belong to the units' arguments, never to the order units run in, so
`LocalExecutor` and `RayExecutor` give the same results.

`LocalExecutor` runs units one after another in this process (every command's
default). `RayExecutor` submits them as Ray tasks (`ray.init()` on a local instance,
or `ray_address=` an existing cluster) and retries, from the driver, a unit whose worker
process or node died, a bounded number of times; an exception raised by a unit's
own code is not retried but raised in the driver, as the local executor does.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from attacks.execution.resident import Resident
from defense.common.errors import InputError, ParameterError, listing

T = TypeVar("T")

EXECUTORS = ("local", "ray")
# Reaching a cluster's address: a dead address is refused within this many seconds.
CONNECT_SECONDS = 5.0
# Workers' environment: TensorFlow takes GPU memory as it needs it (several workers
# share a GPU's memory only that way) and logs only errors.
WORKER_ENVIRONMENT = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass(frozen=True)
class Unit(Generic[T]):
    """One unit of work: `function(*arguments)`, named by `key` (unique in a run).

    `function` must be importable by name (module level) and `arguments` picklable,
    so that a unit can run in another process or on another machine."""

    key: str
    function: Callable[..., T]
    arguments: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A finished unit: its value, and where and how it ran (worker `host:pid`, node,
    wall time in seconds, attempts including the one that finished)."""

    key: str
    value: T
    worker: str
    node: str
    seconds: float
    attempts: int = 1

    def record(self) -> dict[str, Any]:
        """Where and how the unit ran, as JSON values (for the commands' outputs)."""
        return {
            "worker": self.worker,
            "node": self.node,
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
        }


class Executor(Protocol):
    """Runs units and yields their outcomes as they finish."""

    name: str

    def run(self, units: Iterable[Unit[T]]) -> Iterator[Outcome[T]]:
        """Run `units`; yield each one's outcome when it finishes (any order)."""
        ...

    def on_every_node(self, function: Callable[..., T], *arguments: Any) -> dict[str, T]:
        """`function(*arguments)` on every node (e.g. what a node sees of shared storage),
        by node name."""
        ...

    def close(self) -> None:
        """Release what the executor holds (a Ray connection it made)."""
        ...


def worker_name() -> str:
    """This process as `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _timed(function: Callable[..., T], *arguments: Any) -> tuple[T, str, str, float]:
    """`function(*arguments)` with the worker, node and seconds it took (runs in workers)."""
    start = time.perf_counter()
    value = function(*arguments)
    return value, worker_name(), _node(), time.perf_counter() - start


def assigned_gpus() -> tuple[str, ...] | None:
    """The GPUs Ray gave the task running in this process, as device ids (None outside
    a Ray task, or when it was given none): what a container started for it may use."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    return tuple(str(gpu) for gpu in ray.get_gpu_ids()) or None


def _node() -> str:
    """The Ray node this process runs on, or `local` outside Ray."""
    try:
        import ray
    except ImportError:
        return "local"
    if not ray.is_initialized():
        return "local"
    return str(ray.get_runtime_context().get_node_id())


@dataclass
class LocalExecutor:
    """Every unit in this process, one after another, in the order given."""

    name: str = "local"

    def run(self, units: Iterable[Unit[T]]) -> Iterator[Outcome[T]]:
        """Run each unit in turn; a unit's exception propagates at once."""
        for unit in units:
            value, worker, node, seconds = _timed(unit.function, *unit.arguments)
            yield Outcome(unit.key, value, worker, node, seconds)

    def on_every_node(self, function: Callable[..., T], *arguments: Any) -> dict[str, T]:
        """`function(*arguments)` here: the one node."""
        return {"local": function(*arguments)}

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class RayExecutor:
    """Units as Ray tasks of `cpus_per_task` CPUs and `gpus_per_task` GPUs each.

    ray_address: an existing cluster (`host:port`, or "auto"); None starts a local
    instance (of `num_cpus` CPUs; default all). max_retries: how often a unit whose
    worker process or node died is submitted again (a unit's own exception is
    raised, not retried)."""

    ray_address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 3
    num_cpus: int | None = None
    name: str = "ray"
    _started: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        check_settings(
            "ray",
            ray_address=self.ray_address,
            cpus_per_task=self.cpus_per_task,
            gpus_per_task=self.gpus_per_task,
            max_retries=self.max_retries,
        )
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.ray_address,
                num_cpus=self.num_cpus if self.ray_address is None else None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": self.worker_environment()},
            )
            self._started = True
        self._check_gpus(ray)

    def worker_environment(self) -> dict[str, str]:
        """The workers' environment: `WORKER_ENVIRONMENT`, and TensorFlow's thread pools
        sized to a task's CPUs (else every worker takes every core of its node)."""
        threads = str(max(1, int(self.cpus_per_task)))
        return {
            **WORKER_ENVIRONMENT,
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": threads,
        }

    def _check_gpus(self, ray: Any) -> None:
        """Refuse, before any work, tasks that no node of the cluster could run."""
        if self.gpus_per_task == 0:
            return
        most = max(
            (node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]), default=0
        )
        if self.gpus_per_task > most:
            self.close()
            raise ParameterError(
                f"gpus_per_task={self.gpus_per_task:g} but the cluster's largest node has "
                f"{most:g} GPU(s): no task could run",
                "gpus_per_task",
            )

    def run(self, units: Iterable[Unit[T]]) -> Iterator[Outcome[T]]:
        """Submit every unit, then yield outcomes in the order they finish; a unit whose
        worker or node died is submitted again, up to `max_retries` times."""
        ray = import_ray()
        from ray.exceptions import (
            NodeDiedError,
            ObjectLostError,
            OwnerDiedError,
            RayTaskError,
            WorkerCrashedError,
        )

        task = ray.remote(_timed).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=0
        )
        # Values carried by residents (a model built in the driver) go into the object
        # store once each, and each worker fetches one once, not with every unit.
        stored: dict[str, Resident[Any]] = {}

        def arguments(unit: Unit[T]) -> list[Any]:
            return [
                stored.setdefault(value.key, value.stored(ray.put))
                if isinstance(value, Resident)
                else value
                for value in unit.arguments
            ]

        pending: dict[Any, tuple[Unit[T], int]] = {}
        for unit in units:
            pending[task.remote(unit.function, *arguments(unit))] = (unit, 1)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                reference = ready[0]
                unit, attempt = pending.pop(reference)
                try:
                    value, worker, node, seconds = ray.get(reference)
                except RayTaskError as error:
                    raise error.as_instanceof_cause() from None
                except (WorkerCrashedError, NodeDiedError, ObjectLostError, OwnerDiedError):
                    if attempt > self.max_retries:
                        raise
                    pending[task.remote(unit.function, *arguments(unit))] = (unit, attempt + 1)
                    continue
                yield Outcome(unit.key, value, worker, node, seconds, attempt)
        finally:
            for reference in pending:
                ray.cancel(reference, force=True)

    def on_every_node(self, function: Callable[..., T], *arguments: Any) -> dict[str, T]:
        """`function(*arguments)` as a task pinned to each live node (no CPU reserved, so
        that a busy node answers too), by node address and id."""
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(function)
        references = {
            f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})": task.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(*arguments)
            for node in ray.nodes()
            if node["Alive"]
        }
        return {name: ray.get(reference) for name, reference in references.items()}

    def close(self) -> None:
        """Shut down the Ray instance this executor started (a cluster it joined stays)."""
        if self._started:
            import_ray().shutdown()
            self._started = False


def import_ray() -> Any:
    """The `ray` module, or an error naming the extra that installs it."""
    try:
        import ray
    except ImportError as error:
        raise ParameterError(
            "executor 'ray' needs Ray: pip install 'randomization-defense[cluster]' "
            "(or pip install ray)",
            "executor",
        ) from error
    return ray


def check_reachable(ray_address: str) -> None:
    """Refuse at once a cluster address (`host:port`) nothing answers on, rather than
    letting Ray retry it for minutes."""
    host, _, port = ray_address.rpartition(":")
    if host.startswith("ray://"):
        host = host.removeprefix("ray://")
    if not host or not port.isdigit():
        raise ParameterError(
            f"ray_address must be HOST:PORT or auto, got {ray_address!r}", "ray_address"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ParameterError(
            f"ray_address {ray_address}: no Ray cluster answers there ({reason})", "ray_address"
        ) from None


def refuse_unshared(found: Mapping[str, Sequence[str]], what: str, where: str) -> None:
    """Raise `InputError` naming each node of `found` (node -> what it lacks, from
    `Executor.on_every_node`) that lacks something of `what`; `where` names the
    parameters whose folders every node must mount at the same paths."""
    lines = [f"node {node}: {listing(items)}" for node, items in found.items() if items]
    if lines:
        raise InputError(
            f"nodes of the cluster do not see {what} as this process read it:\n  "
            + "\n  ".join(lines)
            + f"\nPut {where} on storage every node mounts at the same paths."
        )


def check_settings(
    name: str,
    *,
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    max_retries: int = 3,
) -> None:
    """Check an executor's settings without starting anything: a known executor, Ray
    installed and its cluster answering (within seconds), the numbers in range."""
    if name not in EXECUTORS:
        choices = ", ".join(EXECUTORS)
        raise ParameterError(f"executor must be one of {choices}, got {name!r}", "executor")
    if name == "local":
        if ray_address is not None:
            raise ParameterError("ray_address needs executor 'ray'", "ray_address", "executor")
        return
    for parameter, value in (("cpus_per_task", cpus_per_task), ("gpus_per_task", gpus_per_task)):
        if isinstance(value, bool) or not (0 <= value < float("inf")):
            raise ParameterError(f"{parameter} must be a number >= 0, got {value}", parameter)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ParameterError(
            f"max_retries must be an integer >= 0, got {max_retries}", "max_retries"
        )
    import_ray()
    if ray_address not in (None, "auto"):
        check_reachable(ray_address)


def make_executor(
    name: str,
    *,
    ray_address: str | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    max_retries: int = 3,
) -> Executor:
    """The executor `name` ("local" or "ray"), its settings checked before any work."""
    check_settings(
        name,
        ray_address=ray_address,
        cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task,
        max_retries=max_retries,
    )
    if name == "local":
        return LocalExecutor()
    return RayExecutor(
        ray_address=ray_address,
        cpus_per_task=cpus_per_task,
        gpus_per_task=gpus_per_task,
        max_retries=max_retries,
    )
