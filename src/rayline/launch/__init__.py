"""Admission: the one way every run enters (DESIGN.md principle 7).

``rayline.run``, ``rayline run``, ``rayline trigger``, a scheduler tick and ``rayline resume``
all come through here: load the flow once (``flow_files``), compile once and reserve the run's
place under the flow's overlap policy (``admission``), start it here or in a child process
(``launchers``), or cancel it (``cancel``). ``Session`` (``session``) holds the settings, the
stores and the executor for one call. ``python -m rayline.launch RUN_ID`` starts one reserved
run (a scheduler's child process). Nothing is imported until used.
"""

from __future__ import annotations

from rayline._lazy import lazy_exports

_LAZY = {
    "Session": "rayline.launch.session",
    "FlowFile": "rayline.launch.flow_files",
    "load_flow": "rayline.launch.flow_files",
    "load_flow_file": "rayline.launch.flow_files",
    "admit": "rayline.launch.admission",
    "plan_run": "rayline.launch.admission",
    "resume_run": "rayline.launch.admission",
    "run_unslotted": "rayline.launch.admission",
    "InProcessLauncher": "rayline.launch.launchers",
    "ProcessLauncher": "rayline.launch.launchers",
    "start_run": "rayline.launch.launchers",
    "cancel_run": "rayline.launch.cancel",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = sorted(_LAZY)
