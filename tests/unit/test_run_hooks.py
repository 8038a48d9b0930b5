"""Hooks and notifications when a run ends: ``@flow(on_failure=..., on_success=...)``, YAML's
``on_failure:``, and the ``RAYLINE_NOTIFY_URL`` webhook, received by a real HTTP server on
127.0.0.1. A hook's failure never changes the run's outcome or the exit code."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

import rayline
from rayline.cli.main import cli
from rayline.errors import DefinitionError, SpecValidationError

FLOWS = Path(__file__).parent / "hook_flows"
HOOKED = FLOWS / "hooked.py"


class Receiver:
    """A local HTTP server that keeps every JSON body POSTed to it; answers ``code``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.code = 204
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                import time

                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                time.sleep(receiver.delay)
                self.send_response(receiver.code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hook_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    log = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("HOOK_LOG", str(log))
    monkeypatch.delenv("RAYLINE_TEST_HOOK_RAISES", raising=False)
    for name in ("RAY_ADDRESS", "RAYLINE_RAY_ADDRESS", "RAYLINE_NOTIFY_URL", "RAYLINE_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    return log


def seen(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *args, "--local", "-q", "--json"])
    return result.exit_code, result.stdout


def test_webhook_hears_of_a_failed_and_a_succeeded_run(hook_log: Path, receiver: Receiver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_NOTIFY_URL", receiver.url)
    code, _ = run_cli(str(HOOKED), "-p", "fail=true")
    assert code == 1
    code, _ = run_cli(str(HOOKED))
    assert code == 0
    failed, ok = receiver.bodies
    assert failed["status"] == "FAILED" and failed["flow"] == "hooked"
    assert "file part-3.parquet" in failed["error"]  # the whole error, every line
    assert failed["link"] == f"rayline runs show {failed['run_id']}"
    assert rayline.load_run(failed["run_id"]).status.value == "FAILED"
    assert ok["status"] == "SUCCEEDED" and ok["error"] is None and ok["ended_at"]


def test_webhook_links_to_the_ui_and_can_hear_only_of_failures(hook_log: Path, receiver: Receiver,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_NOTIFY_URL", receiver.url)
    monkeypatch.setenv("RAYLINE_NOTIFY_ON", "failure")
    monkeypatch.setenv("RAYLINE_UI_URL", "http://ui.example:8265/")
    assert run_cli(str(HOOKED))[0] == 0
    assert receiver.bodies == []
    assert run_cli(str(HOOKED), "-p", "fail=true")[0] == 1
    (body,) = receiver.bodies
    assert body["link"] == f"http://ui.example:8265/runs/{body['run_id']}"


@pytest.mark.parametrize("trouble", ["http_500", "timeout", "refused"])
def test_a_failing_webhook_changes_nothing(hook_log: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture, trouble: str) -> None:
    url = receiver.url
    if trouble == "http_500":
        receiver.code = 500
    elif trouble == "timeout":
        receiver.delay = 1.5
        monkeypatch.setenv("RAYLINE_NOTIFY_TIMEOUT", "0.3")
    else:
        receiver.close()
        url = "http://127.0.0.1:9/hook/SECRET-TOKEN"
    monkeypatch.setenv("RAYLINE_NOTIFY_URL", url)
    with caplog.at_level("WARNING", logger="rayline.launch"):
        run = rayline.run(HOOKED, executor="local")
    assert run.status.value == "SUCCEEDED"
    assert "webhook at 127.0.0.1" in caplog.text
    assert "SECRET-TOKEN" not in caplog.text  # a webhook's path may hold its token


def test_hooks_receive_the_arguments_they_ask_for_and_the_whole_error(hook_log: Path) -> None:
    failed = rayline.run(HOOKED, executor="local", fail=True)
    ok = rayline.run(HOOKED, executor="local")
    on_failure, on_success = seen(hook_log)
    assert on_failure["hook"] == "on_failure" and on_failure["run_id"] == failed.run_id
    assert on_failure["status"] == "FAILED" and on_failure["flow"] == "hooked"
    assert on_failure["error"] == failed.error
    assert "column 'age': int64 != string" in on_failure["error"]
    assert "file part-3.parquet" in on_failure["error"]
    assert on_success == {"hook": "on_success", "run_id": ok.run_id, "record_status": "SUCCEEDED",
                          "rest": ["error", "flow", "status"]}


def test_a_hook_that_raises_does_not_change_the_exit_code(hook_log: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RAYLINE_TEST_HOOK_RAISES", "1")
    code, out = run_cli(str(HOOKED), "-p", "fail=true")
    assert code == 1 and json.loads(out)["status"] == "FAILED"
    assert [h["hook"] for h in seen(hook_log)] == ["on_failure"]


def test_a_resumed_run_announces_its_new_end(hook_log: Path, receiver: Receiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_NOTIFY_URL", receiver.url)
    failed = rayline.run(HOOKED, executor="local", fail=True)
    again = rayline.resume(failed.run_id, executor="local")
    assert again.status.value == "FAILED"
    assert [b["run_id"] for b in receiver.bodies] == [failed.run_id, failed.run_id]
    assert [h["hook"] for h in seen(hook_log)] == ["on_failure", "on_failure"]


def test_yaml_flow_hooks(hook_log: Path) -> None:
    run = rayline.run(str(FLOWS / "hooked.yaml"), executor="local", fail=True)
    (hook,) = seen(hook_log)
    assert hook == {"hook": "yaml_failure", "flow": "hooked_yaml", "status": "FAILED", "error": run.error}
    assert "second line" in hook["error"]


def test_yaml_hooks_are_checked_when_the_file_loads(tmp_path: Path) -> None:
    (tmp_path / "fns.py").write_text((FLOWS / "hook_fns.py").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text('steps:\n  w:\n    uses: "fns:work"\non_failure: ["fns:bad_hook", "os:system"]\n'
                   'on_success: "fns:nope"\n')
    with pytest.raises(SpecValidationError) as err:
        rayline.load_flow(bad)
    text = str(err.value)
    assert f"{bad}:4" in text and "parameter 'x' is not one a hook receives" in text
    assert "module 'os' is not allowed" in text
    assert f"{bad}:5" in text and "no attribute 'nope'" in text


def test_a_hook_with_arguments_it_cannot_receive_is_a_definition_error() -> None:
    def needs_more(*, run_id, team):
        pass

    with pytest.raises(DefinitionError, match="parameter 'team' is not one a hook receives"):
        rayline.flow(on_failure=needs_more)(lambda: None)
    with pytest.raises(DefinitionError, match="is not callable"):
        rayline.flow(on_success=["not a function"])(lambda: None)
