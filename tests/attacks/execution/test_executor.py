"""The executors on real Ray: the same outcomes as the local executor, a worker killed
mid-unit retried (bounded), a node removed mid-run losing no unit, a unit's own error
raised in the driver, and bad settings refused before any work."""

import os
import time
from pathlib import Path

import pytest

from attacks.execution.executor import LocalExecutor, RayExecutor, Unit, make_executor
from attacks.execution.resident import Resident
from defense.common.errors import ParameterError

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")


def square(value):
    return value * value


def fail(value):
    raise ValueError(f"unit {value} fails")


def die_once(marker, value):
    """Kills its worker process on the first attempt (no marker yet), then succeeds."""
    marker = Path(marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return value


def always_die(value):
    os._exit(1)


def slow(value, seconds):
    time.sleep(seconds)
    return value, os.getpid()


def resident_identity(resident):
    return id(resident.get()), os.getpid()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of 2 CPUs for the module."""
    executor = RayExecutor(num_cpus=2, max_retries=2)
    yield executor
    executor.close()


def test_ray_gives_the_local_outcomes(local_ray):
    units = [Unit(f"u{i}", square, (i,)) for i in range(6)]
    local = {outcome.key: outcome.value for outcome in LocalExecutor().run(units)}
    outcomes = list(local_ray.run(units))
    assert {outcome.key: outcome.value for outcome in outcomes} == local
    assert len(outcomes) == 6
    for outcome in outcomes:
        assert outcome.attempts == 1 and outcome.node != "local" and outcome.seconds >= 0
        _, pid = outcome.worker.rsplit(":", 1)
        assert int(pid) != os.getpid()
        assert set(outcome.record()) == {"worker", "node", "seconds", "attempts"}


def test_a_killed_worker_is_retried_a_bounded_number_of_times(local_ray, tmp_path):
    outcomes = list(local_ray.run([Unit("dies", die_once, (str(tmp_path / "marker"), 7))]))
    assert [(o.value, o.attempts) for o in outcomes] == [(7, 2)]
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        list(local_ray.run([Unit("always", always_die, (1,))]))


def test_a_units_own_error_is_raised_in_the_driver_not_retried(local_ray):
    with pytest.raises(ValueError, match="unit 3 fails"):
        list(local_ray.run([Unit("fails", fail, (3,))]))


def test_a_resident_is_built_once_per_worker(local_ray):
    resident = Resident("numbers", lambda: list(range(3)))
    units = [Unit(f"r{i}", resident_identity, (resident,)) for i in range(8)]
    per_worker = {}
    for outcome in local_ray.run(units):
        identity, pid = outcome.value
        per_worker.setdefault(pid, set()).add(identity)
    assert all(len(identities) == 1 for identities in per_worker.values())


def test_bad_settings_are_refused_before_any_work():
    start = time.monotonic()
    with pytest.raises(ParameterError, match="no Ray cluster answers there") as error:
        make_executor("ray", ray_address="127.0.0.1:9")
    assert error.value.parameters == ("ray_address",) and time.monotonic() - start < 10
    with pytest.raises(ParameterError, match="HOST:PORT"):
        make_executor("ray", ray_address="nowhere")
    with pytest.raises(ParameterError, match="one of local, ray"):
        make_executor("dask")
    with pytest.raises(ParameterError, match="ray_address needs executor 'ray'"):
        make_executor("local", ray_address="127.0.0.1:6379")
    with pytest.raises(ParameterError, match="cpus_per_task must be a number >= 0"):
        RayExecutor(cpus_per_task=-1)


def test_more_gpus_per_task_than_any_node_has_is_refused(local_ray):
    with pytest.raises(ParameterError, match="largest node has 0 GPU"):
        RayExecutor(gpus_per_task=1)
