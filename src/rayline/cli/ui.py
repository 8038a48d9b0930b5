"""``rayline ui``: the web UI (``rayline.ui``) on this machine's loopback address by default."""

from __future__ import annotations

import click


@click.command("ui", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but a loopback address requires a token, printed "
                   "once at start.")
@click.option("--local", is_flag=True, help="Resume runs in-process without Ray (as `rayline "
              "resume --local`).")
@click.option("--address", metavar="ADDRESS", help="Ray cluster that resumed runs use.")
def ui_cmd(paths: tuple[str, ...], port: int, host: str, local: bool, address: str | None) -> int:
    """Serve the web UI: runs and their graphs, errors and timelines; flows and schedules;
    models. Resume, cancel, promote and rollback buttons do what the CLI commands do.

    PATHS are flow files or schedules files whose triggers the flows page describes (default
    configs/schedules.yaml, when it exists).

    \b
    Examples:
      rayline ui                                  http://127.0.0.1:8080
      rayline ui configs/schedules.yaml --port 9000
      rayline ui --host 0.0.0.0                   prints the URL with its token
    """
    from rayline.config import Settings
    from rayline.ui.app import UiConfig
    from rayline.ui.server import load_schedules, serve

    if local and address:
        raise click.UsageError("--local runs without Ray, so it cannot be combined with --address")
    entries, error = load_schedules(paths)
    config = UiConfig(settings=Settings(), entries=entries, entries_error=error, local=local,
                      address=address)  # fmt: skip
    serve(config, host=host, port=port)
    return 0
