"""A two-node Ray cluster on this machine (the `cluster` fixture): a node removed
mid-run loses no unit; its units are submitted again and finish on the node left."""

import hashlib
import threading
import time
from pathlib import Path

import pytest

from attacks.execution.executor import RayExecutor, Unit

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")


def slow(value, seconds, folder):
    """Says on which node it runs (a file named by the node), then takes `seconds`."""
    node = ray.get_runtime_context().get_node_id()
    (Path(folder) / f"{value}.{node}").touch()
    time.sleep(seconds)
    return value


def remove_when_busy(cluster, node, folder, seconds=120):
    """Remove `node` (as by a crash) once a unit runs on it."""
    deadline = time.monotonic() + seconds
    while not list(Path(folder).glob(f"*.{node.node_id}")):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    cluster.remove_node(node, allow_graceful=False)


def test_a_node_lost_mid_run_loses_no_unit(cluster, tmp_path):
    cluster, nodes = cluster
    executor = RayExecutor(ray_address=cluster.address, max_retries=2)
    units = [Unit(f"u{i}", slow, (i, 2.0, str(tmp_path))) for i in range(4)]
    lost = threading.Thread(target=remove_when_busy, args=(cluster, nodes[1], tmp_path))
    lost.start()
    try:
        outcomes = list(executor.run(units))
    finally:
        lost.join()
        executor.close()
    assert sorted(outcome.value for outcome in outcomes) == [0, 1, 2, 3]
    assert max(outcome.attempts for outcome in outcomes) == 2
    assert {outcome.node for outcome in outcomes} == {nodes[0].node_id}


def test_every_node_must_see_the_dataset_the_driver_read(cluster, tmp_path):
    """Each node hashes the images itself: a file changed or gone after the driver read
    it is reported for every node, before any cell runs."""
    from attacks.paper.data import ImageSet
    from attacks.paper.run import ImageSets, check_shared
    from defense.common.errors import InputError

    cluster, nodes = cluster
    paths = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(name.encode())
        paths.append(tmp_path / name)
    digests = tuple(hashlib.sha256(path.read_bytes()).hexdigest() for path in paths)
    images = ImageSet(tuple(paths), (0, 1), digests)
    executor = RayExecutor(ray_address=cluster.address)
    try:
        seen = executor.on_every_node(ImageSet.unseen, images)
        assert len(seen) == 3 and all(unseen == [] for unseen in seen.values())
        check_shared(ImageSets(images, images), executor)
        paths[0].write_bytes(b"changed")
        paths[1].unlink()
        with pytest.raises(InputError, match="nodes of the cluster do not see") as error:
            check_shared(ImageSets(images, images), executor)
    finally:
        executor.close()
    message = str(error.value)
    for node in nodes:
        assert f"({node.node_id[:8]}): a.png (other content), b.png (" in message
