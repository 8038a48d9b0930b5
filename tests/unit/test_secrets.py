"""Secrets by reference: ``rayline.Secret("NAME")`` (``-p token=secret:NAME``) is resolved where
the task runs, from the environment or a 0600 file in ``RAYLINE_SECRETS_DIR``; the run store
keeps only the reference, and rayline masks the value in every error and warning it records and
shows. In this process (``--local``); tests/integration/test_task_environments.py does it on Ray."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline import Secret
from rayline.cli.main import cli
from rayline.errors import DefinitionError, UsageError
from rayline.launch.params import coerce_text

FLOWS = Path(__file__).parent / "secret_flows" / "secretive.py"
VALUE = "s3cr3t-Value-7f0c2a"  # what must never reach the store or any text rayline shows


@pytest.fixture
def env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_SECRETS_DIR", "API_TOKEN", "FIXED_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args])
    return result.exit_code, result.stdout, result.stderr


def store_bytes(home: Path) -> bytes:
    files = [p for p in home.rglob("*") if p.is_file() and (p.name.startswith("runs.db"))]
    assert any(p.name == "runs.db" for p in files)
    return b"".join(p.read_bytes() for p in files)  # runs.db, runs.db-wal, runs.db-shm


def test_a_secret_parameter_reaches_the_task_and_never_the_store(env: Path, home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", VALUE)
    digest = env / "digest"
    code, out, err = cli_run("run", f"{FLOWS}:with_param", "--local", "-q", "--json",
                             "-p", "token=secret:API_TOKEN", "-p", f"digest_path={digest}")
    assert code == 0, out + err
    assert digest.read_text() == hashlib.sha256(VALUE.encode()).hexdigest()
    run_id = json.loads(out)["run_id"]
    assert rayline.load_run(run_id).record.params["token"] == {"$secret": "API_TOKEN"}
    assert VALUE not in out + err
    # the warning the task gave carries the value: rayline records it masked
    assert rayline.load_run(run_id).warnings == ["use_token: token in use: ***"]
    shown = cli_run("runs", "show", run_id)[1] + cli_run("runs", "show", run_id, "--json")[1]
    assert "token in use: ***" in shown and VALUE not in shown
    assert VALUE.encode() not in store_bytes(home)


def test_a_secret_a_task_prints_is_masked_in_its_stored_log(env: Path, home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", VALUE)
    code, out, err = cli_run("run", f"{FLOWS}:with_param", "--local", "-q", "--json", "-p", "token=secret:API_TOKEN",
                             "-p", f"digest_path={env / 'digest'}", "-p", "shout=true")
    assert code == 0, out + err
    run = rayline.load_run(json.loads(out)["run_id"])
    assert "calling the server with token ***" in run.logs("use_token")
    logs = [p for p in (home / "artifacts" / "logs").rglob("*") if p.is_file()]
    assert logs and all(VALUE.encode() not in p.read_bytes() for p in logs)


def test_a_failed_tasks_error_is_masked_everywhere_rayline_shows_it(env: Path, home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", VALUE)
    code, out, err = cli_run("run", f"{FLOWS}:with_param", "--local", "-q", "--json", "-p", "token=secret:API_TOKEN",
                             "-p", f"digest_path={env / 'digest'}", "-p", "fail=true")
    assert code == 1
    run = rayline.load_run(json.loads(out)["run_id"])
    assert "the server refused token '***'" in run.error and "Bearer ***" in run.error
    (task,) = run.tasks
    assert "Bearer ***" in task.error_message and "Bearer ***" in task.traceback
    shown = "".join(cli_run("runs", "show", run.run_id, *extra)[1] for extra in ((), ("--json",), ("--traceback",)))
    assert "Bearer ***" in shown
    assert VALUE not in out + err + shown + run.error + task.traceback
    assert VALUE.encode() not in store_bytes(home)


def test_a_resumed_run_resolves_its_secret_again(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", VALUE)
    digest = env / "digest"
    failed = rayline.run(f"{FLOWS}:with_param", executor="local", token=Secret("API_TOKEN"),
                         digest_path=str(digest), fail=True)
    assert failed.status.value == "FAILED"
    digest.unlink()
    monkeypatch.setenv("API_TOKEN", "rotated-value")
    # the recorded params hold the reference, so the resume reads today's value
    again = rayline.resume(failed.run_id, executor="local")
    assert again.status.value == "FAILED"
    assert digest.read_text() == hashlib.sha256(b"rotated-value").hexdigest()


def test_a_secret_from_a_0600_file_in_the_secrets_dir(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = env / "secrets"
    secrets.mkdir()
    (secrets / "FIXED_TOKEN").write_text(VALUE + "\n")
    (secrets / "FIXED_TOKEN").chmod(0o600)
    monkeypatch.setenv("RAYLINE_SECRETS_DIR", str(secrets))
    run = rayline.run(f"{FLOWS}:fixed_secret", executor="local", digest_path=str(env / "digest"))
    assert run.status.value == "SUCCEEDED_WITH_WARNINGS"
    assert (env / "digest").read_text() == hashlib.sha256(VALUE.encode()).hexdigest()


def test_a_secret_file_others_may_read_is_refused(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = env / "secrets"
    secrets.mkdir()
    (secrets / "FIXED_TOKEN").write_text(VALUE)
    (secrets / "FIXED_TOKEN").chmod(0o644)
    monkeypatch.setenv("RAYLINE_SECRETS_DIR", str(secrets))
    run = rayline.run(f"{FLOWS}:fixed_secret", executor="local", digest_path=str(env / "digest"))
    assert run.status.value == "FAILED"
    assert "secret 'FIXED_TOKEN'" in run.error and "mode 0644" in run.error and "chmod 600" in run.error
    assert not (env / "digest").exists()  # the task never ran
    assert VALUE not in run.error


def test_a_missing_secret_names_the_secret_the_node_and_how_to_set_it(env: Path) -> None:
    run = rayline.run(f"{FLOWS}:fixed_secret", executor="local", digest_path=str(env / "digest"))
    assert run.status.value == "FAILED"
    (task,) = run.tasks
    assert task.error_type == "rayline.errors.SecretError"
    for part in ("task 'use_token'", "secret 'FIXED_TOKEN'", "environment variable FIXED_TOKEN",
                 "RAYLINE_SECRETS_DIR"):
        assert part in task.error_message


def test_secret_references_on_the_command_line() -> None:
    assert coerce_text("token", "secret:API_TOKEN", str) == Secret("API_TOKEN")
    assert coerce_text("n", "secret:N", int) == Secret("N")  # checked by type where it resolves
    with pytest.raises(UsageError, match="a secret's name is letters"):
        coerce_text("token", "secret:../etc/passwd", str)
    with pytest.raises(DefinitionError):
        Secret("not a name")
