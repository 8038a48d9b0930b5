"""``python -m rayline.launch RUN_ID [--local] [--address A]``: start one reserved run (a
scheduler's child process). Exit codes as in ``rayline.errors.exit_code_for_status``: 0
succeeded, 130 cancelled, else 1."""

from __future__ import annotations

import argparse
import sys

from rayline.config import Settings
from rayline.errors import EXIT_CANCELLED, exit_code_for_status
from rayline.launch.launchers import InProcessLauncher
from rayline.launch.log_lines import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rayline.launch")
    parser.add_argument("run_id")
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--address")
    args = parser.parse_args(argv)
    configure_logging()
    launcher = InProcessLauncher(Settings(), "local" if args.local else None, args.address)
    try:
        launcher.start(args.run_id)
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    status = launcher.finished[-1][1] if launcher.finished else "FAILED"
    return exit_code_for_status(status)


if __name__ == "__main__":
    sys.exit(main())
