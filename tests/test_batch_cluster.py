"""A node of the cluster dies mid-job: a two-node Ray cluster on this machine
(ray.cluster_utils.Cluster, as Ray's own tests make one), one CPU on each node so that each holds
one of the two actors; the worker node is removed once shards are landing. The job (or --resume)
must end with every input exactly once."""

import collections
import os
import threading
import time

import pyarrow.dataset as pads
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from runtime.batch.__main__ import main  # noqa: E402
from tests.test_batch_inputs import model_and_images  # noqa: E402

IMAGES = 160


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80_000_000,
                                                            "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, object_store_memory=80_000_000)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def both_nodes_busy() -> bool:
    """Each node's one CPU is held by an actor: one actor runs on the worker node."""
    return ray.available_resources().get("CPU", 0) == 0


def test_a_removed_node_loses_nothing(two_nodes, tmp_path):
    cluster, worker = two_nodes
    model, images = model_and_images(tmp_path, IMAGES)
    output = tmp_path / "out"
    arguments = [str(images), "--model", str(model), "--output", str(output), "--batch-size", "2", "--workers", "2",
                 "--ray-address", cluster.address]
    outcome = {}
    job = threading.Thread(target=lambda: outcome.setdefault("rc", main(arguments)), daemon=True)
    job.start()
    removed, deadline = None, time.monotonic() + 180
    while removed is None and job.is_alive() and time.monotonic() < deadline:
        shards = len(os.listdir(output / "results")) if (output / "results").is_dir() else 0
        if shards >= 4 and both_nodes_busy():
            cluster.remove_node(worker)
            removed = shards
        time.sleep(0.01)
    assert removed is not None and removed < IMAGES // 2, "the job ended before the node could be removed"
    job.join(300)
    assert not job.is_alive(), "the job did not finish on the remaining node"
    if outcome["rc"] != 0:  # the job may stop; --resume must then finish it
        assert main([*arguments, "--resume"]) == 0
    rows = pads.dataset(output / "results", format="parquet").to_table().column("path").to_pylist()
    counts = collections.Counter(rows)
    assert sorted(counts) == sorted(str(path) for path in images.iterdir())
    assert set(counts.values()) == {1}
