"""The UI's routes: a Starlette app rendering Jinja2 templates.

Pages: ``/runs`` (filtered list), ``/runs/{id}`` (graph, timeline, errors, …; ``/live`` is the
part htmx re-polls while the run goes, ``.json`` the ``rayline runs show --json`` document),
``/flows`` (flows, schedules, trigger evaluations), ``/models`` and ``/models/{name}``. Buttons
POST (CSRF-checked, ``rayline.ui.security``) to ``/runs/{id}/resume|cancel`` and
``/models/{name}/promote|rollback``, which go through ``rayline.ui.actions``.

Example::

    app = create_app(UiConfig(settings=Settings(), local=True))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rayline.config import Settings
from rayline.display.time_text import duration_text, short_time
from rayline.errors import StoreError
from rayline.ui import actions, pages_flows, pages_models, pages_runs
from rayline.ui.security import CSRF_FIELD, TokenGuard, checked_form, csrf_token, remember_csrf

HERE = Path(__file__).parent
WATCH_S = 60  # how long a page waits for a resume it started to take the run over


@dataclass
class UiConfig:
    """What the app serves: the settings (stores), the schedule entries for the flows page, how
    resumes run (``local``: in the driver process, without Ray; ``address``: a Ray cluster) and,
    for a non-loopback bind, the access token."""

    settings: Settings
    entries: list[Any] = field(default_factory=list)
    entries_error: str | None = None
    local: bool = False
    address: str | None = None
    token: str | None = None
    poll_s: float = 1.0


def create_app(config: UiConfig) -> Starlette:
    """The ASGI app. It opens the run store on start-up and closes it on shut-down."""
    from rayline.store.runs import RunStore

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)  # fmt: skip
    env.filters.update(when=short_time, dur=duration_text, short=lambda s: (s or "")[:12])
    env.globals.update(poll_s=config.poll_s, csrf_field=CSRF_FIELD, urlencode=urlencode, quote=quote,
                       trigger_text=pages_runs.trigger_text)  # fmt: skip
    drivers = actions.Drivers(config.settings, local=config.local, address=config.address)
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        html = env.get_template(template).render(request=request, csrf=csrf_token(request),
                                                 note=request.query_params.get("note"), **context)  # fmt: skip
        return remember_csrf(request, HTMLResponse(html, status_code=status_code))

    def store() -> RunStore:
        return state["runs"]

    def runs_list(request: Request) -> Response:
        f = pages_runs.RunFilter.from_query(request.query_params)
        rows = pages_runs.runs_list(store(), config.settings, f)
        return page(request, "runs.html", rows=rows, f=f, flows=pages_runs.flow_names(store()),
                    statuses=pages_runs.STATUSES, since=list(pages_runs.SINCE))  # fmt: skip

    def run_detail(request: Request) -> Response:
        run = _run_page(request)
        return page(request, "run.html", run=run, view=run.view, **_polling(request, run))

    def run_live(request: Request) -> Response:
        run = _run_page(request)
        return page(request, "run_live.html", run=run, view=run.view, **_polling(request, run))

    def run_json(request: Request) -> Response:
        return JSONResponse(_run_page(request).view.to_json())

    def _run_page(request: Request) -> pages_runs.RunPage:
        try:
            return pages_runs.run_page(store(), config.settings, request.path_params["run_id"])
        except StoreError as e:
            raise HTTPException(404, str(e)) from None

    async def run_resume(request: Request) -> Response:
        await checked_form(request)
        run = _run_page(request)
        run_id = run.view.run_id
        pid = drivers.resume(run_id)
        # Keep the page polling until the resume takes the run over (a new lease generation).
        watch = {"watch": run.generation, "until": int(time.time() + WATCH_S)}
        return _back(f"/runs/{run_id}", f"resume started: `rayline resume {run_id}` (pid {pid})", watch)

    async def run_cancel(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        await checked_form(request)
        run_id = _run_page(request).view.run_id
        code, message = await run_in_threadpool(actions.cancel, config.settings, run_id)
        return _back(f"/runs/{run_id}", message or f"rayline cancel exited {code}")

    def flows(request: Request) -> Response:
        rows = pages_flows.flows_page(store(), config.entries)
        return page(request, "flows.html", flows=rows, entries_error=config.entries_error)

    def registry() -> Any:
        with lock:  # opened on first use: a UI without models never creates a registry file
            if "registry" not in state:
                state["registry"] = actions.registry(config.settings)
            return state["registry"]

    def models(request: Request) -> Response:
        return page(request, "models.html", data=pages_models.models_page(registry()))

    def model_detail(request: Request) -> Response:
        from rayline.errors import ModelNotFoundError

        name = request.path_params["name"]
        try:
            data = pages_models.model_page(registry(), name, config.settings.resolved_home)
        except ModelNotFoundError as e:
            raise HTTPException(404, str(e)) from None
        return page(request, "model.html", m=data)

    async def model_action(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        form = await checked_form(request)
        name, what = request.path_params["name"], request.path_params["action"]
        alias, reason = str(form.get("alias") or ""), str(form.get("reason") or "") or None
        try:
            if what == "promote":
                version = int(str(form.get("version") or "0"))
                ev = await run_in_threadpool(actions.promote, registry(), name, version, alias, reason)
            elif what == "rollback":
                expected = int(str(form["expected"])) if form.get("expected") else None
                ev = await run_in_threadpool(actions.rollback, registry(), name, alias, expected, reason)
            else:
                raise HTTPException(404, f"no action {what!r}")
        except (StoreError, ValueError) as e:
            return _back(f"/models/{quote(name)}", f"{what} refused: {e}")
        note = f"{ev.name}@{ev.alias}: {ev.from_version if ev.from_version is not None else '-'} -> {ev.to_version} ({ev.event})"
        return _back(f"/models/{quote(name)}", note)

    async def http_error(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", str(exc))
        return page(request, "error.html", status_code=code, code=code, detail=detail)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state["runs"] = RunStore(config.settings.run_store_url)
        try:
            yield
        finally:
            drivers.stop()
            state["runs"].close()
            if "registry" in state:
                state["registry"].close()

    routes = [
        Route("/", lambda r: RedirectResponse("/runs", 307)),
        Route("/runs", runs_list),
        Route("/runs/{run_id}.json", run_json),
        Route("/runs/{run_id}", run_detail),
        Route("/runs/{run_id}/live", run_live),
        Route("/runs/{run_id}/resume", run_resume, methods=["POST"]),
        Route("/runs/{run_id}/cancel", run_cancel, methods=["POST"]),
        Route("/flows", flows),
        Route("/models", models),
        Route("/models/{name}", model_detail),
        Route("/models/{name}/{action}", model_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TokenGuard, token=config.token)] if config.token else []
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error})  # fmt: skip


def _back(path: str, note: str, extra: dict[str, Any] | None = None) -> Response:
    """Redirect after a POST (303: the browser GETs the page) with a one-line note."""
    return RedirectResponse(f"{path}?{urlencode({'note': note, **(extra or {})})}", status_code=303)


def _polling(request: Request, run: pages_runs.RunPage) -> dict[str, Any]:
    """Whether the run's page keeps polling, and the URL it polls: while the run goes, and after
    a resume button until the resume takes the run over (``watch``: the generation before it,
    ``until``: when to give up waiting)."""
    live = f"/runs/{run.view.run_id}/live"
    try:
        watch, until = int(request.query_params["watch"]), float(request.query_params["until"])
    except (KeyError, ValueError):
        return {"polls": not run.terminal, "live_url": live}
    waiting = run.generation <= watch and time.time() < until
    if waiting or not run.terminal:
        live += "?" + urlencode({"watch": watch, "until": int(until)})
    return {"polls": waiting or not run.terminal, "live_url": live}
