"""The web UI (``rayline ui``) in a real browser: Debian's headless Chromium driven by Selenium.

One UI server (``rayline ui --local``, its own process group) and one browser serve the whole
module; runs are made with the real CLI (``rayline run --local``) in child processes. Waits are
on files the tasks write and on what the page shows, each with a deadline; never a bare sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.coordination import wait_for

ROOT = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).resolve().parent / "flows"
DEMO = FLOWS / "ui_demo.py"
SCHEDULED = FLOWS / "ui_scheduled.py"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"),
]  # fmt: skip


# ------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAYLINE_DB_URL"}
    path = [str(ROOT / "src"), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "RAYLINE_HOME": str(home), "PYTHONPATH": os.pathsep.join(path), **extra}


def rayline(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rayline.cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    return json.loads(done.stdout)["run_id"]


class UiServer:
    """``rayline ui`` in its own process group, stopped by that group's id."""

    def __init__(self, env: dict[str, str], *args: str, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.host = host
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rayline.cli.main", "ui", "--port", str(self.port), "--host", host, *args],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.banner = self.proc.stderr.readline() if self.proc.stderr else ""  # the URL line
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._answers, 60, f"rayline ui on port {self.port} to answer")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, f"rayline ui exited: {self.banner}"
        try:
            return httpx.get(self.url + "/static/ui.css", timeout=2).status_code in (200, 401)
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        if self.proc.stderr:
            self.proc.stderr.close()


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui") / "home"


@pytest.fixture(scope="module")
def env(ui_home: Path) -> dict[str, str]:
    return cli_env(ui_home)


@pytest.fixture(scope="module")
def failed_run(env: dict[str, str], ui_home: Path) -> str:
    """A FAILED run of ui_demo: `check` failed with a three-line error, `gated` upstream-failed."""
    done = rayline(env, "run", str(DEMO), "--local", "--json", "-p", f"marker={ui_home.parent / 'never'}")
    assert done.returncode == 1, done.stderr
    return run_id_of(done)


@pytest.fixture(scope="module")
def models(ui_home: Path) -> str:
    """Model ``ui-model``: versions 1 and 2, production promoted to 1 then 2; a drift report."""
    from sklearn.linear_model import LinearRegression

    from rayline.models.registry.sql import ModelRegistry
    from rayline.monitoring.drift_stats import DriftReport, FeatureDrift, save_report

    with ModelRegistry(ui_home) as reg:
        for auc in (0.81, 0.86):
            model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.0])
            mv = reg.register("ui-model", model, metrics={"auc": auc},
                              lineage={"run_id": "0123456789ab", "input_snapshot": f"snap-{auc}"})  # fmt: skip
            reg.promote("ui-model", mv.version, "production", reason=f"auc {auc}")
    feature = FeatureDrift("tenure", "numeric", 0.41, 0.3, 0.001, True, 100, 50)
    save_report(DriftReport("ui-model", (feature,), 0.41, True, 0.2, 0.1, 0.05, 100, 50), ui_home)
    return "ui-model"


@pytest.fixture(scope="module")
def server(env: dict[str, str], failed_run: str, models: str) -> Iterator[UiServer]:
    srv = UiServer(env, "--local", str(SCHEDULED))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    pid = service.process.pid if service.process else None
    try:
        driver.quit()
    finally:
        if pid is not None:  # chromedriver's group: chromium and its helpers
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def until(browser: Any, condition: Any, timeout: float = 30, what: str = "the page") -> Any:
    """Wait for ``condition(browser)``; htmx swapping the part of the page it reads is no error."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    wait = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored)
    return wait.until(condition, f"waiting for {what}")


def node_state(browser: Any, node: str) -> str | None:
    """The state the graph shows for ``node`` (read in one go, so a swap cannot split it)."""
    return browser.execute_script(
        "const g = document.querySelector(`#graph g.node[data-node='${arguments[0]}']`);"
        "return g ? g.getAttribute('data-state') : null;", node)


def run_status(browser: Any) -> str | None:
    return browser.execute_script("const s = document.getElementById('run-status');"
                                  "return s ? s.textContent.trim() : null;")  # fmt: skip


# ------------------------------------------------------------------------------ tests
def test_the_server_binds_to_loopback_only_unless_told_otherwise(server: UiServer, env: dict[str, str]) -> None:
    import psutil

    listening = [c.laddr.ip for c in psutil.Process(server.proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]  # fmt: skip
    assert listening == ["127.0.0.1"], listening
    assert "?token=" not in server.banner

    exposed = UiServer(env, host="0.0.0.0")
    try:
        token = exposed.banner.split("?token=", 1)[1].split()[0]
        assert httpx.get(exposed.url + "/runs").status_code == 401
        assert httpx.get(exposed.url + "/runs?token=wrong").status_code == 401
        with httpx.Client(base_url=exposed.url, follow_redirects=True) as client:
            page = client.get(f"/runs?token={token}")  # once: a cookie keeps it
            assert page.status_code == 200 and "<h1>Runs</h1>" in page.text
            assert client.get("/flows").status_code == 200
        assert httpx.get(exposed.url + "/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        exposed.stop()


def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(server: UiServer, failed_run: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        client.get(f"/runs/{failed_run}")
        csrf = client.cookies["rayline_csrf"]
        assert client.post(f"/runs/{failed_run}/resume", data={}).status_code == 403
        assert client.post(f"/runs/{failed_run}/resume", data={"csrf": "forged"}).status_code == 403
        evil = client.post(f"/runs/{failed_run}/resume", data={"csrf": csrf},
                           headers={"Origin": "http://evil.example"})  # fmt: skip
        assert evil.status_code == 403
        assert client.post("/models/ui-model/rollback", data={"alias": "production"}).status_code == 403
    assert json.loads(httpx.get(f"{server.url}/runs/{failed_run}.json").text)["status"] == "FAILED"


def test_the_runs_list_shows_runs_newest_first_filtered_by_flow_and_status(
    server: UiServer, browser: Any, failed_run: str
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    ids = [r.get_attribute("data-run-id") for r in rows]
    assert failed_run in ids
    row = rows[ids.index(failed_run)]
    assert "ui_demo" in row.text and "FAILED" in row.text and " s" in row.text  # duration
    browser.get(server.url + "/runs?status=SUCCEEDED&flow=ui_demo")
    assert failed_run not in [r.get_attribute("data-run-id") for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]
    browser.get(server.url + "/runs?status=FAILED&since=1h")
    assert failed_run in [r.get_attribute("data-run-id") for r in browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")]


def test_a_failed_runs_page_shows_its_nodes_and_every_line_of_the_error(
    server: UiServer, browser: Any, failed_run: str, env: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    from tests.e2e.flows.ui_demo import PROBLEMS

    browser.get(f"{server.url}/runs/{failed_run}")
    assert {n: node_state(browser, n) for n in ("load", "check", "gated")} == {
        "load": "SUCCEEDED", "check": "FAILED", "gated": "UPSTREAM_FAILED"}  # fmt: skip
    error = browser.find_element(By.CSS_SELECTOR, '.task-error[data-node="check"] pre.error').text
    assert [line.strip() for line in error.splitlines()] == ["ValueError: " + PROBLEMS[0],
                                                              *(p.strip() for p in PROBLEMS[1:])]
    assert all(p.strip() in browser.find_element(By.ID, "run-error").text for p in PROBLEMS)
    assert browser.find_element(By.ID, "resume").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, '#timeline .row[data-node="check"]')
    # The page and `rayline runs show --json` read the same model of the run.
    shown = rayline(env, "runs", "show", failed_run, "--json")
    cli = json.loads(shown.stdout)
    cli.pop("exit_code")
    assert httpx.get(f"{server.url}/runs/{failed_run}.json").json() == cli


def test_resume_button_reruns_the_failed_task_and_the_page_shows_success(
    server: UiServer, browser: Any, env: dict[str, str], ui_home: Path
) -> None:
    from selenium.webdriver.common.by import By

    marker = ui_home.parent / "marker-resume"
    run_id = run_id_of(rayline(env, "run", str(DEMO), "--local", "--json", "-p", f"marker={marker}"))
    browser.get(f"{server.url}/runs/{run_id}")
    assert node_state(browser, "check") == "FAILED"
    marker.write_text("now the data is there")
    browser.find_element(By.ID, "resume").click()
    until(browser, lambda b: "resume started" in b.find_element(By.ID, "note").text, what="the resume note")
    until(browser, lambda b: run_status(b) == "SUCCEEDED", 60, "the run to succeed")
    assert {n: node_state(browser, n) for n in ("load", "check", "gated")} == dict.fromkeys(
        ("load", "check", "gated"), "SUCCEEDED")  # fmt: skip
    assert not browser.find_elements(By.ID, "resume")
    assert httpx.get(f"{server.url}/runs/{run_id}.json").json()["status"] == "SUCCEEDED"


def watch_a_run_go(server: UiServer, browser: Any, env: dict[str, str], gate: Path, *, on_ray: bool) -> None:
    """Start ui_demo with its `gated` task held at the gate, open its page, let the task go and
    see the page follow, without reloading. On Ray the driver records each state as it changes,
    so the page also shows `gated` RUNNING; in-process (``--local``) the driver runs a task inside
    its loop and records states when it returns, so the page sees them change at the end."""
    from selenium.webdriver.common.by import By

    gate.mkdir()
    marker = gate / "marker"
    marker.write_text("present")
    where = {**env, "RAYLINE_NUM_CPUS": "2"} if on_ray else env
    with (gate / "driver.log").open("w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "rayline.cli.main", "run", str(DEMO), "--quiet",
             *(() if on_ray else ("--local",)), "-p", f"marker={marker}", "-p", f"gate={gate}"],
            env=where, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )  # fmt: skip

    def started() -> bool:
        assert driver.poll() is None, f"the driver exited: {(gate / 'driver.log').read_text()}"
        return (gate / "gated.started").exists()

    try:
        wait_for(started, 200 if on_ray else 60, "task 'gated' to start")
        browser.get(server.url + "/runs?flow=ui_demo&status=RUNNING")
        browser.find_element(By.CSS_SELECTOR, "#runs tbody tr td a").click()
        until(browser, lambda b: run_status(b) == "RUNNING", what="the run shown RUNNING")
        # both executors record each task as it starts and as it ends (the local one too)
        until(browser, lambda b: node_state(b, "gated") == "RUNNING", what="'gated' shown RUNNING")
        assert node_state(browser, "check") == "SUCCEEDED"
        browser.execute_script("window.__same_page = 'still here';")
        (gate / "go").write_text("go")
        until(browser, lambda b: node_state(b, "gated") == "SUCCEEDED", 60, "'gated' shown SUCCEEDED")
        until(browser, lambda b: run_status(b) == "SUCCEEDED", what="the run's status")
        assert [node_state(browser, n) for n in ("load", "check")] == ["SUCCEEDED", "SUCCEEDED"]
        assert browser.execute_script("return window.__same_page;") == "still here"  # no reload
        assert driver.wait(60) == 0
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)


def test_a_running_runs_node_states_change_without_reloading(
    server: UiServer, browser: Any, env: dict[str, str], ui_home: Path
) -> None:
    watch_a_run_go(server, browser, env, ui_home.parent / "gate-local", on_ray=False)


@pytest.mark.slow
def test_a_run_on_ray_shows_its_running_task_live(
    server: UiServer, browser: Any, env: dict[str, str], ui_home: Path
) -> None:
    watch_a_run_go(server, browser, env, ui_home.parent / "gate-ray", on_ray=True)


def test_cancel_button_stops_a_running_run(server: UiServer, browser: Any, env: dict[str, str], ui_home: Path) -> None:
    from selenium.webdriver.common.by import By

    gate = ui_home.parent / "gate-cancel"
    gate.mkdir()
    (gate / "marker").write_text("present")
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayline.cli.main", "run", str(DEMO), "--local", "--quiet", "--json",
         "-p", f"marker={gate / 'marker'}", "-p", f"gate={gate}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (gate / "gated.started").exists(), 60, "task 'gated' to start")
        browser.get(server.url + "/runs?flow=ui_demo&status=RUNNING")
        browser.find_element(By.CSS_SELECTOR, "#runs tbody tr td a").click()
        until(browser, lambda b: b.find_element(By.ID, "cancel").click() or True, what="the cancel button")
        until(browser, lambda b: run_status(b) == "CANCELLED", 60, "the run to be cancelled")
        assert "CANCELLED" in browser.find_element(By.ID, "note").text
        out, _ = driver.communicate(timeout=60)
        assert json.loads(out)["status"] == "CANCELLED"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(10)


def test_rollback_button_moves_the_alias_back_and_records_it(server: UiServer, browser: Any, models: str, ui_home: Path) -> None:
    from selenium.webdriver.common.by import By

    from rayline.models.registry.sql import ModelRegistry

    browser.get(f"{server.url}/models/{models}")
    alias = browser.find_element(By.CSS_SELECTOR, '#aliases tr[data-alias="production"]')
    assert alias.get_attribute("data-version") == "2"
    assert "auc=0.86" in browser.find_element(By.CSS_SELECTOR, '#versions tr[data-version="2"]').text
    assert "snap-0.81" in browser.find_element(By.CSS_SELECTOR, '#versions tr[data-version="1"]').text
    assert "tenure" in browser.find_element(By.ID, "drift").text
    browser.find_element(By.ID, "rollback-production").click()
    until(browser, lambda b: "2 -> 1 (rollback)" in b.find_element(By.ID, "note").text, what="the rollback note")
    alias = browser.find_element(By.CSS_SELECTOR, '#aliases tr[data-alias="production"]')
    assert alias.get_attribute("data-version") == "1"
    assert "rollback" in browser.find_element(By.ID, "history").text
    with ModelRegistry(ui_home) as reg:
        assert reg.aliases(models)["production"] == 1
        assert reg.history(models, "production")[-1].event == "rollback"


def test_the_flows_page_shows_schedules_next_fire_and_why_a_trigger_fired(
    server: UiServer, browser: Any, env: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    fired = rayline(env, "trigger", str(SCHEDULED), "--local", "--reason", "relabelled October", "--json")
    assert fired.returncode == 0, fired.stderr
    browser.get(server.url + "/flows")
    flow = browser.find_element(By.CSS_SELECTOR, 'section.flow[data-flow="ui_scheduled"]')
    trigger = flow.find_element(By.CSS_SELECTOR, "table.triggers tbody tr")
    assert "0 3 * * *" in trigger.text and "03:00:00Z" in trigger.text  # the next fire time
    evaluations = flow.find_element(By.CSS_SELECTOR, "table.evaluations").text
    assert "relabelled October" in evaluations and "manual" in evaluations


def test_every_page_renders_a_screenshot_that_is_not_blank(
    server: UiServer, browser: Any, failed_run: str, models: str, tmp_path: Path
) -> None:
    from PIL import Image, ImageStat

    for name, path in [("runs", "/runs"), ("run", f"/runs/{failed_run}"), ("flows", "/flows"),
                       ("models", "/models"), ("model", f"/models/{models}")]:  # fmt: skip
        browser.get(server.url + path)
        shot = tmp_path / f"{name}.png"
        assert browser.save_screenshot(str(shot))
        with Image.open(shot) as image:
            grey = image.convert("L")
            assert grey.size[0] >= 800
            spread = ImageStat.Stat(grey).stddev[0]
            colours = len(grey.getcolors(maxcolors=256 * 256) or ())
        assert spread > 10 and colours > 20, f"{name} page looks blank: stddev {spread:.1f}, {colours} shades"


def test_the_ui_reads_runs_from_a_postgresql_run_store(postgres: Any, ui_home: Path) -> None:
    env = cli_env(ui_home.parent / "pg-home", RAYLINE_DB_URL=postgres.new_database())
    done = rayline(env, "run", str(DEMO), "--local", "--json", "-p", "marker=")
    assert done.returncode == 1, done.stderr
    run_id = run_id_of(done)
    srv = UiServer(env)
    try:
        listed = httpx.get(f"{srv.url}/runs?flow=ui_demo&status=FAILED")
        assert f'data-run-id="{run_id}"' in listed.text
        page = httpx.get(f"{srv.url}/runs/{run_id}").text
        assert 'data-node="check" data-state="FAILED"' in page and "column &#39;region&#39; is missing" in page
        cli = json.loads(rayline(env, "runs", "show", run_id, "--json").stdout)
        cli.pop("exit_code")
        assert httpx.get(f"{srv.url}/runs/{run_id}.json").json() == cli
    finally:
        srv.stop()
