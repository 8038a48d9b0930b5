"""rayline on a Ray cluster whose nodes share no disk (issue 13, "refuse what cannot work").

The cluster is ``tests/cluster_nodes.py``: a ``ray start --head`` node and a worker node in its
own mount namespace, where a tmpfs covers the driver's folders (``workdir``) but
``workdir/shared``. A driver whose artifact folder is in ``workdir`` runs a flow with a task pinned
to the worker node: rayline refuses before running (exit 2) naming the node and
``RAYLINE_ARTIFACTS_URL``. A driver whose folder is in ``workdir/shared`` (a disk both nodes mount)
runs it, and its second run does not probe the nodes again (the check is cached).

One cluster serves the module (starting two Ray nodes takes a minute or more on a loaded 2-core
machine); it is stopped by its nodes' process groups.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayline.launch.cluster_check import CACHE_FILE
from tests.cluster_nodes import NodeCluster, new_workdir

# Two real Ray nodes (one in its own mount namespace) take minutes to start on a loaded 2-core
# machine: `make test-slow` runs this module; tests/unit/test_cluster_check.py covers the check's
# message, marker and cache in the default run.
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

FLOW = str(Path(__file__).parent / "flows" / "worker_node_flow.py")


@pytest.fixture(scope="module")
def cluster() -> Iterator[NodeCluster]:
    with NodeCluster.start(new_workdir()) as nodes:
        yield nodes


def test_a_local_artifact_folder_the_worker_node_cannot_see_is_refused_before_running(cluster):
    home = cluster.workdir / "private-home"  # covered by the worker node's tmpfs
    refused = cluster.rayline("run", FLOW, "--address", cluster.address, home=home)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, refused.stderr
    assert "RAYLINE_ARTIFACTS_URL" in errors[0] and "s3://" in errors[0] and "file://" in errors[0]
    assert str(home / "artifacts") in errors[0] and "1 of the 2 nodes" in errors[0]
    assert "Traceback" not in refused.stderr
    assert not list((home / "artifacts").glob(".rayline-node-check-*"))  # the marker is gone
    # a refusal is not remembered: only the node that saw the folder may be recorded, and the
    # next run probes the blind node again (and is refused again)
    cache = home / CACHE_FILE
    assert not cache.exists() or all(len(ids) == 1 for ids in json.loads(cache.read_text()).values())
    again = cluster.rayline("run", FLOW, "--address", cluster.address, home=home)
    assert again.returncode == 2 and "1 of the 2 nodes" in again.stderr, again.stdout + again.stderr


@pytest.mark.slow
def test_a_folder_every_node_mounts_passes_the_check_once_per_cluster(cluster):
    home = cluster.shared / "home"  # the worker node sees it through its bind mount
    first = cluster.rayline("run", FLOW, "--address", cluster.address, "--json", home=home)
    assert first.returncode == 0, first.stdout + first.stderr
    cache = home / CACHE_FILE
    records = json.loads(cache.read_text())
    [(key, node_ids)] = records.items()
    assert key.endswith(str(home / "artifacts")) and len(node_ids) == 2
    before = (cache.read_bytes(), cache.stat().st_mtime_ns)

    second = cluster.rayline("run", FLOW, "--address", cluster.address, "-p", "n=5", home=home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (cache.read_bytes(), cache.stat().st_mtime_ns) == before  # no second probe
