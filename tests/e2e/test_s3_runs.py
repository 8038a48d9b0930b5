"""Storage by URL end to end: ``RAYLINE_ARTIFACTS_URL=s3://…`` on a real S3 server on loopback
(moto, ``tests/s3_server.py``) and the shared local Ray, whose workers were started before any
of these settings existed (the store reaches them inside each task, not through their
environment). A run driven by ``rayline run`` writes every output to the bucket and nothing to the
local folder; another driver reads the result from the bucket; a byte flipped in the bucket is
found by ``rayline store verify`` and ``resume`` recomputes only what depended on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline.cli.main import cli
from rayline.store.states import RunStatus
from tests.coordination import ledger

pytestmark = pytest.mark.usefixtures("ray_session")

DIAMOND = f"{Path(__file__).parent / 'flows' / 'damaged.py'}:diamond"
RAYLINE = Path(sys.executable).with_name("rayline")
NODES = ("load", "double", "total", "count")


def test_a_run_keeps_its_outputs_in_the_bucket_and_resumes_from_it(s3_settings, s3_server, ray_address, tmp_path):
    folder = tmp_path / "ledgers"
    folder.mkdir()
    env = {**os.environ, "RAYLINE_HOME": str(s3_settings.resolved_home)}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)  # everything the driver knows of the bucket is in RAYLINE_ARTIFACTS_*
    done = subprocess.run([str(RAYLINE), "run", DIAMOND, "-p", f"folder={folder}", "--address", ray_address],
                          capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    url = s3_settings.artifacts_url
    assert f"outputs: stored under {url}; load them with rayline.load_run(" in done.stdout, done.stdout
    assert str(s3_settings.resolved_home / "artifacts") not in done.stdout
    run_id = re.search(r"rayline runs show (\S+)", done.stdout)[1]

    run = rayline.load_run(run_id, settings=s3_settings)  # another driver, reading the bucket
    assert run.status == RunStatus.SUCCEEDED
    assert run.result() == {"total": 999000, "count": 1000}
    bucket = s3_server.filesystem()
    stored = {Path(p).name for p in bucket.find(url.removeprefix("s3://") + "/objects")}
    assert {run.task(n).digest for n in NODES} <= stored
    assert not (s3_settings.resolved_home / "artifacts" / "objects").exists()  # nothing local

    digest = run.task("double").digest
    key = f"{url.removeprefix('s3://')}/objects/{digest[:2]}/{digest}"
    raw = bytearray(bucket.cat_file(key))
    raw[len(raw) // 2] ^= 0x01
    bucket.pipe_file(key, bytes(raw))
    checked = CliRunner().invoke(cli, ["store", "verify", "--json"])
    assert checked.exit_code == 1 and digest in checked.stdout, checked.output
    repaired = CliRunner().invoke(cli, ["store", "verify", "--repair"])
    assert repaired.exit_code == 0, repaired.output

    resumed = rayline.resume(run_id, settings=s3_settings)
    assert resumed.status == RunStatus.SUCCEEDED, resumed.error
    assert {n: ledger(folder, n) for n in NODES} == {"load": 1, "double": 2, "total": 2, "count": 1}
    assert rayline.load_run(run_id, settings=s3_settings).output("double") == [2 * x for x in range(1000)]
