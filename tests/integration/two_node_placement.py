"""Run by tests/integration/test_faults.py in its own process (a multi-raylet cluster cannot
share the test session's Ray): a two-node ``ray.cluster_utils.Cluster`` (a 1-CPU head, and a
1-CPU node with one logical GPU), the ``placement`` flow on it, then a flow that asks for two
GPUs. Prints one JSON object on its last line of stdout.

Usage: python two_node_placement.py RAYLINE_HOME FOLDER
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(home: str, folder: str) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    import rayline
    from rayline.config import Settings
    from rayline.launch.session import Session
    from tests.integration.flows import faults

    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        settings = Settings(home=home, heartbeat_interval=0.5, lease_ttl=5.0)
        run = rayline.run(faults.placement, settings=settings, folder=folder)
        out: dict = {
            "head_node": cluster.head_node.node_id,
            "gpu_node": gpu_node.node_id,
            "status": run.status.value,
            "error": run.error,
            "result": run.result() if run.succeeded else None,
        }
        try:
            rayline.run(faults.two_gpus, settings=settings)
            out["two_gpus"] = {"raised": None}
        except rayline.ValidationError as exc:
            out["two_gpus"] = {"raised": type(exc).__name__, "message": str(exc)}
        with Session(settings, executor="local") as eng:
            out["runs"] = len(eng.runs.list_runs())
        out["seconds"] = time.monotonic() - t0
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])))
