"""``rayline serve MODEL[@ALIAS|@N]``, ``rayline serve stop`` and ``rayline serve status``.

``rayline serve churn@production`` deploys (or updates in place) a Ray Serve application on
127.0.0.1 and blocks until Ctrl-C, then removes it. With ``--detach`` it returns once the model
serves; the application lives on in the Ray cluster given by ``--address``/``RAY_ADDRESS`` until
``rayline serve stop``. Exit codes: 0 serving (or stopped), 1 the rollout failed (the previous
version serves again), 2 unknown model/version/alias or bad options.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click


class ServeFailed(click.ClickException):
    """A rayline error in a serve command, keeping its exit code (2 lookups, 1 rollouts)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from rayline.errors import RaylineError

    try:
        return fn(*args, **kwargs)
    except RaylineError as e:
        raise ServeFailed(str(e), getattr(e, "exit_code", 1)) from None
    except ValueError as e:  # bad names (UnsafeNameError is also a StoreError)
        raise ServeFailed(str(e), 2) from None


class _ServeGroup(click.Group):
    """``rayline serve MODEL …`` runs the ``start`` subcommand; ``stop``/``status`` are named."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group("serve", cls=_ServeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def serve_cmd() -> None:
    """Serve a registered model over HTTP (Ray Serve, 127.0.0.1).

    \b
    Examples:
      rayline serve churn@production --port 8000
      rayline serve churn@production --log-inputs      # for the drift trigger
      rayline serve churn@7 --detach --address 127.0.0.1:6379
      rayline serve status
      rayline serve stop churn
    """


def _autoscale(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise click.BadParameter("use MIN:MAX, e.g. 1:4", param_hint="--autoscale")
    return {"min": int(lo), "max": int(hi)}


def _input_log(on: bool | None, log_dir: str | None, flush_s: float | None) -> bool | dict[str, Any] | None:
    """``serve_model``'s ``input_log`` from ``--[no-]log-inputs``, ``--log-dir``, ``--log-flush-s``."""
    options = {k: v for k, v in (("dir", log_dir), ("flush_seconds", flush_s)) if v is not None}
    if on is False and options:
        raise click.UsageError("--no-log-inputs contradicts --log-dir/--log-flush-s")
    return options or on


@serve_cmd.command("start", short_help="Serve MODEL[@ALIAS|@N] (the default subcommand).")
@click.argument("ref", metavar="MODEL[@ALIAS|@N]")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Listen address; anything but loopback should use a token.")
@click.option("--app", "app_name", help="Serve application name (default: the model name).")
@click.option("--route-prefix", default="/", show_default=True)
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--autoscale", metavar="MIN:MAX", help="Autoscale between MIN and MAX replicas.")
@click.option("--num-cpus", type=float, help="CPUs per replica (default 0.5).")
@click.option("--num-gpus", type=float, help="GPUs per replica (fractions allowed).")
@click.option("--max-batch", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--token-env", metavar="VAR", help="Require Bearer auth; token in env var VAR.")
@click.option("--token-file", metavar="PATH", help="Require Bearer auth; token in this file.")
@click.option("--log-inputs/--no-log-inputs", default=None,
              help="Log the served records to Parquet for drift monitoring (default: as the "
                   "version being replaced did, else $RAYLINE_INPUT_LOG in the replicas).")
@click.option("--log-dir", metavar="PATH", type=click.Path(file_okay=False),
              help="Log the served records under PATH/<model>/ instead of "
                   "the artifact URL's monitor/ (implies --log-inputs).")
@click.option("--log-flush-s", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Write the logged records at least this often (default 5; implies --log-inputs).")
@click.option("--ingress", type=click.Choice(["proxy", "haproxy"]), default=None,
              help="HTTP ingress if this starts Serve: Serve's Python proxy (default, or "
                   "$RAYLINE_SERVE_INGRESS) or its HAProxy ingress (faster; see the README).")
@click.option("--address", help="Ray cluster (default: $RAY_ADDRESS, else a local Ray).")
@click.option("--detach", is_flag=True, help="Return once serving (needs a running cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment as JSON.")
def start_cmd(ref: str, port: int, host: str, app_name: str | None, route_prefix: str,
              replicas: int, autoscale: str | None, num_cpus: float | None,
              num_gpus: float | None, max_batch: int, batch_wait_ms: float,
              token_env: str | None, token_file: str | None, log_inputs: bool | None,
              log_dir: str | None, log_flush_s: float | None, ingress: str | None,
              address: str | None, detach: bool, as_json: bool) -> int:  # fmt: skip
    """Deploy MODEL (its 'production' alias), MODEL@ALIAS or MODEL@N, or update it in place.

    With --log-inputs the records of /predict requests land as Parquet under
    <RAYLINE_ARTIFACTS_URL>/monitor/<model>/ (or --log-dir), where the drift trigger reads them.
    """
    import os

    from rayline.models.registry import parse_ref
    from rayline.serving.rollout import serve_model, stop_serving

    name, version, alias = _call(parse_ref, ref)
    address = address or os.environ.get("RAY_ADDRESS")
    if detach and not address:
        raise ServeFailed(
            "--detach needs a Ray cluster that outlives this command: start one with "
            "`RAY_AUTH_MODE=token ray start --head --include-dashboard=false`, then pass "
            "--address or set RAY_ADDRESS", 2)  # fmt: skip
    actor = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v is not None}
    alias = alias or (None if version is not None else "production")
    input_log = _input_log(log_inputs, log_dir, log_flush_s)
    d = _call(serve_model, name, version, alias,
              app_name=app_name, route_prefix=route_prefix, num_replicas=replicas,
              autoscaling=_autoscale(autoscale), batch_max_size=max_batch,
              batch_wait_timeout_s=batch_wait_ms / 1000.0, ray_actor_options=actor or None,
              auth_token_env=token_env, auth_token_file=token_file, host=host, port=port,
              address=address, input_log=input_log, ingress=ingress)  # fmt: skip
    if as_json:
        click.echo(json.dumps(d.to_dict()))
    else:
        click.echo(f"serving {d.name} version {d.version} as '{d.app}' at {d.url}/predict")
    if detach:
        return 0
    click.echo("press Ctrl-C to stop", err=True)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        _call(stop_serving, d.app)
        click.echo(f"stopped '{d.app}'", err=True)
    return 0


@serve_cmd.command("stop", short_help="Stop a served application (or all).")
@click.argument("app", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every application rayline serves.")
@click.option("--address", help="Ray cluster (default: the one recorded at deploy time).")
@click.option("--json", "as_json", is_flag=True, help="Print the stopped names as JSON.")
def stop_cmd(app: str | None, stop_all: bool, address: str | None, as_json: bool) -> int:
    """Stop APP (a model's application name), or every one with --all."""
    from rayline.serving.rollout import stop_serving

    if not app and not stop_all:
        raise click.UsageError("name the application to stop, or pass --all")
    stopped = _call(stop_serving, None if stop_all else app, address=address)
    if as_json:
        click.echo(json.dumps(stopped))
    else:
        click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


@serve_cmd.command("status", short_help="Show what rayline serves.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def status_cmd(as_json: bool) -> int:
    """The applications rayline deployed: model, version, alias, URL, status."""
    from rayline.serving.rollout import serving_status

    rows = _call(serving_status)
    if as_json:
        click.echo(json.dumps(rows))
        return 0
    if not rows:
        click.echo("nothing served; start with `rayline serve MODEL@ALIAS`", err=True)
    for r in rows:
        click.echo(f"{r['app']}  {r['model']}@{r['version']}  {r['alias'] or '-'}  {r['url']}  "
                   f"{r['live_status'] or r['recorded_status']}")  # fmt: skip
    return 0
