"""The ``rayline`` command: a click group whose ``main`` maps outcomes to exit codes.

Exit codes: 0 succeeded, 1 the run failed (or an unexpected error), 2 a definition,
validation or usage error, 3 skipped (the flow was busy: ``run``, ``trigger``, ``resume``),
130 cancelled.
Only click is imported at the top so that ``rayline --help`` stays fast; the engine (and Ray)
load inside the commands that need them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import Any

import click

from rayline.cli.drift import drift_group
from rayline.cli.graph import graph_cmd
from rayline.cli.models import models_group
from rayline.cli.run import resume_cmd, run_cmd
from rayline.cli.runs import cancel_cmd, runs_group
from rayline.cli.schedule import schedule_group, scheduler_cmd, trigger_cmd
from rayline.cli.serve import serve_cmd
from rayline.cli.store import store_group

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
DEBUG_ENV = "RAYLINE_DEBUG"


class RaylineGroup(click.Group):
    """A group whose ``main`` turns every outcome into one exit code and a message for people.

    Overriding ``main`` (rather than wrapping it) keeps ``click.testing.CliRunner`` and the
    console script on the same path.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        code = _invoke(lambda: super(RaylineGroup, self).main(
            args, prog_name or "rayline", complete_var, standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


def _invoke(call: Any) -> int:
    from rayline.errors import RaylineError

    try:
        rv = call()
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt outside a run
        click.echo("cancelled", err=True)
        return EXIT_CANCELLED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except RaylineError as exc:
        click.echo(f"error: {exc}", err=True)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        return exc.exit_code
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"error: unexpected {type(exc).__name__}: {first}", err=True)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        else:
            click.echo(f"run with {DEBUG_ENV}=1 for the traceback", err=True)
        return EXIT_FAILED
    return rv if isinstance(rv, int) else EXIT_OK


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now*, so that a rich ``Live`` display (which
    redirects stderr) and test runners (which swap it) both receive the lines."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """INFO (or ``RAYLINE_LOG_LEVEL``) from rayline's loggers to stderr; UTC timestamps when
    stderr is not a terminal (cron, CI), a short form on a terminal."""
    level_name = os.environ.get("RAYLINE_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.INFO
    logger = logging.getLogger("rayline")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    if _stderr_is_tty():
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@click.group(cls=RaylineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rayline", prog_name="rayline")
def cli() -> None:
    """rayline: run ML workflows on Ray, recorded and resumable.

    A flow is a Python file with a @flow function (or a YAML flow file). Runs and their
    outputs are recorded under $RAYLINE_HOME (default ./.rayline).

    \b
    Examples:
      rayline run flows/hello.py -p scale=3      run a flow on (local) Ray
      rayline run flows/hello.py --local         run in this process, no Ray
      rayline runs list                          recent runs
      rayline resume 1a2b3c                      re-run what did not finish
      rayline graph flows/hello.py --format mermaid

    Exit codes: 0 succeeded, 1 run failed, 2 definition or usage error, 3 skipped (the
    flow was busy), 130 cancelled.
    Set RAYLINE_DEBUG=1 for tracebacks, RAYLINE_LOG_LEVEL=DEBUG for more logging.
    """
    configure_logging()


cli.add_command(run_cmd)
cli.add_command(resume_cmd)
cli.add_command(runs_group)
cli.add_command(cancel_cmd)
cli.add_command(graph_cmd)
cli.add_command(schedule_group)
cli.add_command(scheduler_cmd)
cli.add_command(trigger_cmd)
cli.add_command(models_group)
cli.add_command(serve_cmd)
cli.add_command(drift_group)
cli.add_command(store_group)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``rayline = rayline.cli.main:main``)."""
    return cli.main(args=argv, prog_name="rayline")


if __name__ == "__main__":
    main()
