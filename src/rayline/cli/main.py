"""The ``rayline`` command: a click group whose ``main`` maps outcomes to exit codes.

Exit codes (the table in ``rayline.errors`` and the README): 0 succeeded, 1 the run failed
(or an unexpected error), 2 a definition, validation or usage error, 3 nothing was done because
the flow or the run is busy (``run``, ``trigger``, ``resume``), 4 the store cannot be used
(corrupt, read-only, full, unreachable), 130 cancelled. Every failure ends with one line
``error: ...`` on stderr, never a traceback (``RAYLINE_DEBUG=1`` prints it).
Only click is imported at the top so that ``rayline --help`` stays fast; the engine (and Ray)
load inside the commands that need them.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

import click

from rayline.cli.drift import drift_group
from rayline.cli.graph import graph_cmd
from rayline.cli.logs import logs_cmd
from rayline.cli.models import models_group
from rayline.cli.run import resume_cmd, run_cmd
from rayline.cli.runs import cancel_cmd, runs_group
from rayline.cli.schedule import schedule_group, scheduler_cmd, trigger_cmd
from rayline.cli.serve import serve_cmd
from rayline.cli.store import store_group
from rayline.cli.ui import ui_cmd
from rayline.cli.usage import usage_cmd
from rayline.errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_STORE
from rayline.launch.log_lines import configure_logging

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
        if exc.exit_code == EXIT_FAILED and store_failure(exc.__cause__ or exc.__context__) is not None:
            return EXIT_STORE  # a store error raised for a corrupt, read-only or full store
        return exc.exit_code
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = store_failure(exc)
        if reason is not None:
            click.echo(f"error: the store cannot be used: {reason}", err=True)
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            return EXIT_STORE
        click.echo(f"error: unexpected {type(exc).__name__}: {first}", err=True)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        else:
            click.echo(f"run with {DEBUG_ENV}=1 for the traceback", err=True)
        return EXIT_FAILED
    return rv if isinstance(rv, int) else EXIT_OK


_STORE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO}
_STORE_PHRASES = ("file is not a database", "database disk image is malformed", "readonly database",
                  "read-only", "disk i/o error", "database or disk is full", "unable to open database",
                  "could not connect", "connection refused")  # fmt: skip


def store_failure(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` says the store (database or artifact folder) cannot be
    read or written (corrupt, read-only, full, unreachable); None for any other error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = " ".join(str(cur).split())
        module = type(cur).__module__ or ""
        if isinstance(cur, OSError) and cur.errno in _STORE_ERRNOS:
            return f"{os.strerror(cur.errno)}: {getattr(cur, 'filename', None) or text}"
        if module.startswith(("sqlalchemy", "sqlite3", "psycopg")):
            low = text.lower()
            if type(cur).__name__ in ("OperationalError", "DatabaseError") or any(p in low for p in _STORE_PHRASES):
                return text.split(" [SQL:")[0].split("(Background on this error")[0].strip()[:300]
        cur = cur.__cause__ or cur.__context__
    return None


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

    Exit codes: 0 succeeded, 1 run failed, 2 definition or usage error, 3 nothing done
    (the flow or the run was busy), 4 the store cannot be used, 130 cancelled.
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
cli.add_command(ui_cmd)
cli.add_command(usage_cmd)
cli.add_command(logs_cmd)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``rayline = rayline.cli.main:main``)."""
    return cli.main(args=argv, prog_name="rayline")


if __name__ == "__main__":
    main()
