"""``launch.driver_signals.cancel_on_signals``: inside it SIGINT (even ignored at exec) and
SIGTERM raise ``KeyboardInterrupt`` naming the signal; the previous handlers come back after."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import os, signal, time
from rayline.launch.driver_signals import cancel_on_signals

assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # inherited from the parent
for sig in (signal.SIGINT, signal.SIGTERM):
    try:
        with cancel_on_signals() as signals:
            signal.signal(signal.SIGTERM, lambda *a: os._exit(9))  # as ray.init does
            signals.arm()
            os.kill(os.getpid(), sig)
            time.sleep(5)
        print("not interrupted")
    except KeyboardInterrupt as exc:
        print("interrupted", exc.args[0])
print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, callable(signal.getsignal(signal.SIGTERM)))
"""


def test_sigint_ignored_at_exec_and_sigterm_interrupt_inside_and_handlers_come_back():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["interrupted SIGINT", "interrupted SIGTERM", "True True"]
