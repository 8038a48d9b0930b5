"""A store on a full disk (issue 12, hole 11): the real ``rayline`` console script runs
``--local`` with ``RAYLINE_HOME`` on a tiny tmpfs of its own, mounted inside a private mount
namespace (``unshare -m`` as root, as in CI; ``unshare -rm``, a user namespace, otherwise), so
every write past its size gets a real ``ENOSPC``. Each command must end with exit code 4 (the
README's "the store cannot be used") and one line ``error: ...`` on stderr, never a traceback;
no half-written artifact or temporary file may stay, and the run must not stay RUNNING.

The filesystem lives only as long as its namespace, so each test runs its commands in one shell
script inside it and copies the store out (``cp -a``) before the namespace ends; the test reads
that copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from rayline.api import load_run
from rayline.cli.runs import show_json
from rayline.config import Settings
from rayline.store.runs import RunStore
from rayline.store.sql import sqlite_url
from rayline.store.states import RunStatus, TaskStatus

ROOT = Path(__file__).resolve().parents[2]
RAYLINE = Path(sys.executable).parent / "rayline"
FLOWS = Path(__file__).parent / "flows" / "full_disk.py"
STORE_UNUSABLE = 4  # the README's exit-code table


@cache
def namespace_command() -> list[str] | None:
    """``unshare`` arguments under which ``mount -t tmpfs`` works here, or None."""
    if shutil.which("unshare") is None:
        return None
    for args in (["unshare", "-m"], ["unshare", "-rm"]) if os.geteuid() == 0 else (["unshare", "-rm"],):
        probe = subprocess.run([*args, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                                "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, timeout=30)  # fmt: skip
        if probe.returncode == 0:
            return args
    return None


def in_tiny_disk(tmp_path: Path, script: str, size: str = "4m") -> Path:
    """Run ``script`` (sh) with ``$RAYLINE_HOME`` on a fresh tmpfs of ``size`` in a mount
    namespace of its own; ``$OUT`` is a folder outside it. ``$OUT/home`` is the store as the
    script left it. Returns ``$OUT``."""
    args = namespace_command()
    if args is None:
        pytest.skip("no mount namespace here (unshare -m / -rm): cannot make a real full disk")
    mnt, out = tmp_path / "disk", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYLINE_"))}
    env.update(MNT=str(mnt), OUT=str(out), RAYLINE=str(RAYLINE), RAYLINE_HOME=str(mnt / "home"),
               FLOWS=str(FLOWS), PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "src")]))  # fmt: skip
    wrapped = f'set -u\nmount -t tmpfs -o size={size} tmpfs "$MNT" || exit 99\n{script}\ncp -a "$MNT/home" "$OUT/home"\n'
    done = subprocess.run([*args, "sh", "-c", wrapped], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def fill(leave_kb: int = 0) -> str:
    """Shell lines that fill the disk, leaving about ``leave_kb`` KiB free (``$MNT/filler``)."""
    return (f'dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null; rm "$MNT/filler"\n'
            f'free=$(df -k "$MNT" | awk \'NR==2{{print $4}}\')\n'
            f'dd if=/dev/zero of="$MNT/filler" bs=4k count=$(( (free - {leave_kb}) / 4 )) 2>/dev/null\n')  # fmt: skip


def command(name: str, *args: str) -> str:
    """A shell line running ``rayline ARGS``: ``$OUT/NAME.out``, ``.err``, ``.rc``."""
    quoted = " ".join(f"'{a}'" for a in args)
    return f'"$RAYLINE" {quoted} > "$OUT/{name}.out" 2> "$OUT/{name}.err"; echo $? > "$OUT/{name}.rc"\n'


def outcome(out: Path, name: str) -> tuple[int, str, str]:
    return int((out / f"{name}.rc").read_text()), (out / f"{name}.out").read_text(), (out / f"{name}.err").read_text()


def one_line_error(stdout: str, stderr: str) -> str:
    assert "Traceback" not in stdout + stderr, stdout + stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), stderr
    return lines[-1]


def runs_in(home: Path) -> list:
    with RunStore(sqlite_url(home / "runs.db")) as store:
        return [(r, store.get_tasks(r.run_id)) for r in store.list_runs()]


def stored_files(home: Path) -> list[str]:
    """Every file under the artifact store's objects (data and manifests)."""
    objects = home / "artifacts" / "objects"
    return sorted(p.name for p in objects.rglob("*") if p.is_file()) if objects.exists() else []


def temp_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".tmp"))]


# ------------------------------------------------------------------------------------ tests
def test_an_output_that_does_not_fit_ends_the_run_failed_with_exit_4_and_resume_finishes_it(tmp_path):
    # 4 MiB disk, about 1 MiB of it free; 'big' returns 3 MB
    script = (command("warm", "run", f"{FLOWS}:fills", "--local", "-q", "-p", "size=10") + fill(1024)
              + command("text", "run", f"{FLOWS}:fills", "--local", "-q")
              + command("json", "run", f"{FLOWS}:fills", "--local", "-q", "--json")
              + 'cp -a "$MNT/home" "$OUT/full-home"\nrm "$MNT/filler"\n'
              + 'id=$(sed -n \'s/.*"run_id": "\\([0-9a-f]*\\)".*/\\1/p\' "$OUT/json.out")\n'
              + '"$RAYLINE" resume "$id" --local -q --json > "$OUT/resume.out" 2> "$OUT/resume.err"; echo $? > "$OUT/resume.rc"\n')  # fmt: skip
    out = in_tiny_disk(tmp_path, script)
    assert outcome(out, "warm")[0] == 0, outcome(out, "warm")

    for name in ("text", "json"):
        code, stdout, stderr = outcome(out, name)
        assert code == STORE_UNUSABLE, (code, stdout, stderr)
        line = one_line_error(stdout, stderr)
        assert "the store cannot be used" in line and "no space left" in line and "'big'" in line, line
    doc = json.loads(outcome(out, "json")[1])  # --json: still one JSON object on stdout
    assert doc["status"] == "FAILED" and "no space left" in doc["error"], doc

    full = out / "full-home"
    failed = [(r, tasks) for r, tasks in runs_in(full) if r.status != RunStatus.SUCCEEDED]
    assert len(failed) == 2, [r.status for r, _ in runs_in(full)]
    for run, tasks in failed:  # recorded FAILED, never left RUNNING; 'small' kept
        assert run.status == RunStatus.FAILED, run
        states = {t.node_id: t.status for t in tasks}
        assert states == {"small": TaskStatus.SUCCEEDED, "big": TaskStatus.FAILED}, states
        assert next(t for t in tasks if t.node_id == "big").digest is None
    # nothing half-written: only the warm-up run's two objects (data + manifest each), no temp file
    assert len(stored_files(full)) == 4, stored_files(full)
    assert temp_files(full) == []

    # what `runs show --json` says they exited with
    assert {show_json(load_run(r.run_id, settings=Settings(home=full)))["exit_code"] for r, _ in failed} == {4}

    # with room again, resume runs only 'big' and stores it whole
    code, stdout, stderr = outcome(out, "resume")
    assert code == 0, (stdout, stderr)
    assert json.loads(stdout)["status"] == "SUCCEEDED"
    assert len(stored_files(out / "home")) == 6 and temp_files(out / "home") == []


def test_a_full_disk_before_the_run_starts_ends_every_command_with_exit_4_and_one_line(tmp_path):
    script = (command("warm", "run", f"{FLOWS}:fills", "--local", "-q", "-p", "size=10") + fill(0)
              + command("run", "run", f"{FLOWS}:fills", "--local", "-q", "-p", "size=10")
              + command("fresh", "run", f"{FLOWS}:fills", "--local", "-q", "-p", "size=10")
              .replace('"$RAYLINE"', 'RAYLINE_HOME="$MNT/fresh" "$RAYLINE"')
              + 'rm "$MNT/filler"\n')  # fmt: skip
    out = in_tiny_disk(tmp_path, script, size="1m")
    assert outcome(out, "warm")[0] == 0, outcome(out, "warm")
    for name in ("run", "fresh"):
        code, stdout, stderr = outcome(out, name)
        assert code == STORE_UNUSABLE, (name, code, stdout, stderr)
        line = one_line_error(stdout, stderr)
        assert "runs.db" in line and ("full" in line or "I/O" in line), line
    runs = runs_in(out / "home")
    assert [r.status for r, _ in runs] == [RunStatus.SUCCEEDED]  # only the warm-up: nothing half-made
    assert len(stored_files(out / "home")) == 4 and temp_files(out / "home") == []


def test_a_disk_that_fills_mid_run_ends_it_with_exit_4_one_line_and_never_running(tmp_path):
    # 'hog' fills the disk itself; its output, its log and the run's records then find no room
    script = (command("warm", "run", f"{FLOWS}:fills", "--local", "-q", "-p", "size=10")
              + command("hog", "run", f"{FLOWS}:hogs", "--local", "-q", "--json", "-p", "path=$MNT/filler")
              .replace("'path=$MNT/filler'", '"path=$MNT/filler"')
              + 'rm -f "$MNT/filler"\n'
              + command("show", "runs", "list", "--json"))  # fmt: skip
    out = in_tiny_disk(tmp_path, script, size="2m")
    assert outcome(out, "warm")[0] == 0, outcome(out, "warm")
    code, stdout, stderr = outcome(out, "hog")
    assert code == STORE_UNUSABLE, (code, stdout, stderr)
    line = one_line_error(stdout, stderr)
    assert "no space left" in line.lower() or "full" in line, line

    # Read back with room again: the run is over (FAILED, or INTERRUPTED when even that could
    # not be written: its driver is gone), 'small' kept, and it can be resumed.
    code, stdout, stderr = outcome(out, "show")
    assert code == 0, stderr
    listed = {r["flow"]: r["status"] for r in json.loads(stdout)}
    assert listed["hogs"] in ("FAILED", "INTERRUPTED"), listed
    (hogs,) = [(r, tasks) for r, tasks in runs_in(out / "home") if r.flow_name == "hogs"]
    assert {t.node_id: t.status for t in hogs[1]}["small"] == TaskStatus.SUCCEEDED
    assert {t.node_id: t.digest for t in hogs[1]}["hog"] is None
    assert temp_files(out / "home") == []
