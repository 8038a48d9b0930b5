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
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayline.launch.cluster_check import CACHE_FILE
from tests.cluster_nodes import BIN, NodeCluster, free_port, new_workdir, stop_group
from tests.coordination import wait_for

# Two real Ray nodes (one in its own mount namespace) take minutes to start on a loaded 2-core
# machine: `make test-slow` runs this module; tests/unit/test_cluster_check.py covers the check's
# message, marker and cache in the default run.
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

FLOW = str(Path(__file__).parent / "flows" / "worker_node_flow.py")
TRAIN_FLOW = str(Path(__file__).parent / "flows" / "cluster_train.py")


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


def _json(done: subprocess.CompletedProcess) -> Any:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_train_register_kill_the_driver_resume_list_and_serve_with_the_store_in_a_bucket(cluster, s3_server):
    """The driver's home (its SQLite database, its folders) is invisible to the worker node, the
    artifacts are in a bucket on the S3 server: the worker node makes the data, trains and
    registers; the driver is killed -9 at a gate after that; resume runs only the gate; the
    result and the model are read on the driver, and `rayline serve` answers from the bucket."""
    import httpx

    home, gate = cluster.workdir / "s3-driver-home", cluster.shared / "gate"
    gate.mkdir()
    store = {"RAYLINE_ARTIFACTS_URL": s3_server.new_bucket() + "/rayline",
             "RAYLINE_ARTIFACTS_OPTIONS": json.dumps(s3_server.options)}  # fmt: skip
    env = cluster.env(home, RAY_ADDRESS=cluster.address, **store)
    out = cluster.workdir.parent / f"{cluster.workdir.name}.driver.out"
    with out.open("w") as sink:
        driver = subprocess.Popen([str(BIN / "rayline"), "run", TRAIN_FLOW, "-p", f"gate={gate}", "--json"], env=env,
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: (gate / "reached").exists() or driver.poll() is not None, 600,
                 "the run to reach its gate", interval=0.5)  # fmt: skip
        assert driver.poll() is None, out.read_text()[-4000:]
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        stop_group(driver, grace_s=1)
    (gate / "release").touch()

    [run] = _json(cluster.rayline("runs", "list", "--json", home=home, **store))
    resumed = cluster.rayline("resume", run["run_id"], "--json", home=home, timeout=600, **store)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    shown = _json(cluster.rayline("runs", "show", run["run_id"], "--json", home=home, **store))
    assert shown["status"] == "SUCCEEDED", shown
    attempts = {t["node_id"]: t["attempts"] for t in shown["tasks"]}
    assert attempts["make_data"] == attempts["train_sklearn"] == attempts["register_model"] == 1, attempts
    # registered once (a second register_model would have made version 2), on the driver's database
    models = _json(cluster.rayline("models", "list", "--json", home=home, **store))
    assert [(m["name"], m["latest_version"]) for m in models] == [("mn", 1)], models
    result = subprocess.run([sys.executable, "-c", f"import rayline; print(rayline.load_run({run['run_id']!r}).result())"],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("mn@1"), result.stdout + result.stderr

    port, served = free_port(), cluster.workdir.parent / f"{cluster.workdir.name}.serve.out"
    with served.open("w") as sink:
        serving = subprocess.Popen([str(BIN / "rayline"), "serve", "mn@1", "--port", str(port)],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: "serving mn version 1" in served.read_text() or serving.poll() is not None, 600,
                 "rayline serve to say it serves mn version 1", interval=0.5)  # fmt: skip
        assert serving.poll() is None, served.read_text()[-4000:]
        reply = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": [{"a": 2.0, "b": 0.0}]}, timeout=60)
        assert reply.status_code == 200 and reply.json()["predictions"] == [1], reply.text
    finally:
        stopped = cluster.rayline("serve", "stop", "mn", home=home, **store)
        stop_group(serving)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
