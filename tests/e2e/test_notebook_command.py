"""``make notebook`` (what ``make demo`` suggests last): JupyterLab from the project's
environment, listening on 127.0.0.1 only, behind Jupyter's token. Started in its own process
group, stopped by that group."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.listening_sockets import descendants, is_loopback, listeners

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(300)
def test_make_notebook_starts_jupyterlab_on_loopback(tmp_path):
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "lab.out"
    # -o: the environment is installed already (make test installs it first); never reinstall here
    command = ["make", "-o", f"{VENV}/.rayline-installed", "notebook", f"VENV={VENV}",
               f"NOTEBOOK_ARGS=--no-browser --port={port} --ServerApp.port_retries=0"]  # fmt: skip
    with log.open("w") as sink:
        lab = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        found = None
        while found is None and time.monotonic() < deadline:
            assert lab.poll() is None, log.read_text()[-3000:]
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\S*\?token=(\w+)", log.read_text())
            time.sleep(0.5)
        assert found, log.read_text()[-3000:]
        assert httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=30).status_code == 403
        ok = httpx.get(f"http://127.0.0.1:{port}/api/status", params={"token": found.group(1)}, timeout=30)
        assert ok.status_code == 200, ok.text
        kernels = httpx.get(f"http://127.0.0.1:{port}/api/kernelspecs", params={"token": found.group(1)},
                            timeout=30).json()  # fmt: skip
        assert "python3" in kernels["kernelspecs"]
        opened = listeners(descendants(lab.pid))
        assert opened and all(is_loopback(a) for _, _, a in opened), opened
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(lab.pid, sig)
            except ProcessLookupError:
                break
            try:
                lab.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        lab.wait(timeout=30)
