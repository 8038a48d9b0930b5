"""Hooks for the YAML flow ``hooked.yaml``."""

from __future__ import annotations

import json
import os


def on_fail(*, flow, status, error):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps({"hook": "yaml_failure", "flow": flow, "status": status, "error": error}) + "\n")


def work(fail: bool = False) -> int:
    if fail:
        raise ValueError("yaml step failed\nsecond line")
    return 1


def bad_hook(x):
    return x
