"""Random ``kill -9`` during model rollouts (issue 12): one model served on the session Ray
(127.0.0.1, a free port) under bounded load; each round moves the ``production`` alias to another
version and rolls it out (``serve_model(name, alias=...)``), and kills, at random, the replica
process (while the old version serves just before the rollout, or after a random number of
requests once the rollout has begun) or the process running the rollout (once the endpoint
serves the new version, before the rollout recorded its outcome). The rollout is repeated until
it succeeds (a rollout that failed rolled the alias back). Then the endpoint must answer again with
the alias's version and that version's predictions, the replica must be a new process, and the
rollout must have ended consistently: the registry's alias, the version rayline recorded as
deployed and the version the endpoint serves agree.

The replica's pid comes from Serve's controller (the replica details behind ``serve status``),
never from a process name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import ROUNDS
from tests.coordination import pid_alive, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

APP = "chaos"
BODY = {"records": [{"a": 1.0}]}
ANSWERS = {1: 10, 2: 20, 3: 30, 4: 40}  # version -> what it predicts
WHEN = ("the replica, while serving before the rollout", "the replica, during the rollout",
        "the rollout's own process, mid-rollout")
ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = """import sys
from rayline.serving.rollout import serve_model
home, app, port, address = sys.argv[1:5]
serve_model("constant", None, "production", home=home, app_name=app, port=int(port), address=address,
            health_check_period_s=0.5, health_check_timeout_s=5, max_constructor_retries=2,
            batch_wait_timeout_s=0.01, bake_s=2.0, timeout_s=120)
"""


class Constant:
    """A pyfunc model that predicts ``answer`` for every record."""

    def __init__(self, answer: int) -> None:
        self.answer = answer

    def predict(self, records: Any) -> list[int]:
        return [self.answer for _ in records]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_pids() -> list[int]:
    """Pids of the application's RUNNING replicas, as Serve's controller reports them (the
    details ``serve status`` shows). Ray's state API (``ray.util.state.list_actors``) answers
    through the dashboard's API server, which the session Ray runs without."""
    from ray.serve.context import _get_global_client

    app = _get_global_client().get_serve_details()["applications"].get(APP) or {}
    return [r["pid"] for d in app.get("deployments", {}).values() for r in d.get("replicas", [])
            if r.get("state") == "RUNNING" and r.get("pid")]  # fmt: skip


class Load:
    """Two client threads posting BODY in a closed loop until stopped (at most ``max_s``);
    records (status, version, predictions) per request."""

    def __init__(self, url: str, max_s: float = 180.0) -> None:
        self.url, self.deadline = url, time.monotonic() + max_s
        self.results: list[tuple[int, int | None, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                try:
                    r = c.post(f"{self.url}/predict", json=BODY)
                    doc = r.json() if r.status_code == 200 else {}
                    self.results.append((r.status_code, doc.get("version"), doc.get("predictions")))
                except (httpx.HTTPError, ValueError):
                    self.results.append((599, None, None))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)


@pytest.fixture(scope="module")
def registry(ray_session, tmp_path_factory):
    from ray import serve

    from rayline.models.registry.sql import ModelRegistry

    reg = ModelRegistry(tmp_path_factory.mktemp("chaos-serving") / "home")
    for version, answer in ANSWERS.items():
        assert reg.register("constant", Constant(answer)).version == version
    try:
        yield reg
    finally:
        try:
            serve.delete(APP)
        finally:
            reg.close()


def roll_out(reg: Any, port: int) -> Any:
    from rayline.serving.rollout import serve_model

    return serve_model("constant", None, "production", home=reg, app_name=APP, port=port,
                       health_check_period_s=0.5, health_check_timeout_s=5, max_constructor_retries=2,
                       batch_wait_timeout_s=0.01, bake_s=1.0, timeout_s=120)  # fmt: skip


def served(url: str) -> dict[str, Any]:
    """The endpoint's answer once it answers 200 again (the replica may be restarting)."""

    def ask() -> dict[str, Any] | None:
        try:
            r = httpx.post(f"{url}/predict", json=BODY, timeout=10)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    return wait_for(ask, 120, f"{url}/predict to answer 200 again", interval=0.25)


def kill_after(load: Load, requests: int, rollout: Any, pid: int) -> None:
    """SIGKILL ``pid`` once ``requests`` more requests were answered (or the rollout ended)."""
    seen = len(load.results)
    wait_for(lambda: len(load.results) >= seen + requests or rollout.done(), 120,
             f"{requests} requests during the rollout")  # fmt: skip
    os.kill(pid, signal.SIGKILL)


def kill_a_rollout_process(registry: Any, port: int, load: Load, target: int, logs: Path) -> bool:
    """Roll out in a process of its own (``serve_model`` there, on this Ray) and SIGKILL it by
    its pid once the endpoint answers with ``target`` (it is baking, its outcome not yet
    recorded). False if it had ended first."""
    import ray

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    args = [str(registry.home), APP, str(port), ray.get_runtime_context().gcs_address]
    with open(logs, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", ROLLOUT, *args], env=env, stdout=log, stderr=log)
    seen = len(load.results)
    try:
        wait_for(lambda: proc.poll() is not None or any(v == target for _, v, _ in load.results[seen:]), 180,
                 f"the rollout process to switch the endpoint to v{target}")  # fmt: skip
        if proc.poll() is not None:
            assert proc.returncode == 0, logs.read_text()[-3000:]
            return False
        os.kill(proc.pid, signal.SIGKILL)
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.mark.timeout(300 + 200 * ROUNDS)
def test_kills_around_rollouts_end_with_alias_and_served_version_agreeing(registry, chaos, tmp_path):
    from rayline.serving.rollout import RolloutError, serving_status

    port = _free_port()
    registry.promote("constant", 1, "production")
    with chaos.step("the first deployment"):
        url = roll_out(registry, port).url
        assert served(url)["version"] == 1
    current = 1
    for r in range(ROUNDS):
        target = chaos.rng.choice([v for v in ANSWERS if v != current])
        when = chaos.rng.choice(WHEN)
        after = chaos.rng.randint(0, 40)
        with chaos.step(f"round {r + 1} of {ROUNDS}: v{current} -> v{target}, killed {when}"
                        + (f" after {after} requests" if when == WHEN[1] else "")):  # fmt: skip
            (killed,) = wait_for(lambda: replica_pids() or None, 60, "the live replica's pid")
            registry.promote("constant", target, "production", reason="chaos")
            tries, outcomes = 0, []
            with Load(url) as load, ThreadPoolExecutor(max_workers=1) as pool:
                if when == WHEN[0]:
                    wait_for(lambda: len(load.results) >= 5, 60, "requests to the old version")
                    os.kill(killed, signal.SIGKILL)
                elif when == WHEN[2]:  # the replica lives on; the rollout is run again below
                    if not kill_a_rollout_process(registry, port, load, target, tmp_path / f"rollout-{r}.log"):
                        when = "nothing: the rollout process ended first"
                    killed = None
                rollout = pool.submit(roll_out, registry, port)
                if when == WHEN[1]:
                    kill_after(load, after, rollout, killed)
                if killed is not None:
                    wait_for(lambda pid=killed: not pid_alive(pid), 30, f"the replica (pid {killed}) to die")
                while True:  # repeat the rollout until it succeeds, as an operator would
                    tries += 1
                    try:
                        outcomes.append(rollout.result(timeout=240).version)
                        break
                    except RolloutError as e:
                        outcomes.append(f"rolled back: {e}")
                        assert tries < 4, f"the rollout never succeeded: {outcomes}"
                        registry.promote("constant", target, "production", reason="chaos, again")
                        rollout = pool.submit(roll_out, registry, port)
                answer = served(url)
            assert outcomes[-1] == target, outcomes
            # the endpoint answers with the alias's version, its predictions (from a new process
            # where the replica was killed)
            alias = registry.aliases("constant")["production"]
            assert alias == target and answer["version"] == target, (alias, answer)
            assert answer["predictions"] == [ANSWERS[target]], answer
            (pid,) = wait_for(lambda: replica_pids() or None, 60, "the live replica's pid")
            assert pid != killed and httpx.get(f"{url}/version", timeout=10).json()["pid"] == pid
            (row,) = [s for s in serving_status(registry.home) if s["app"] == APP]
            assert (row["version"], row["alias"], row["live_status"]) == (target, "production", "RUNNING"), row
            last = registry.history("constant")[-1]
            assert (last.event, last.to_version) == ("rollout", target), last
            # every 200 answered a version's own predictions, and the load ended on the target
            wrong = [(v, p) for s, v, p in load.results if s == 200 and p != [ANSWERS.get(v)]]
            assert not wrong, wrong[:5]
            assert load.results and load.results[-1][:2] == (200, target), load.results[-5:]
            print(f"round {r + 1}: v{current} -> v{target}, killed {when}, {tries} rollout(s), "
                  f"{sum(s != 200 for s, *_ in load.results)} of {len(load.results)} requests failed")
            current = target
