"""rayline's errors, one hierarchy.

Every message says what is wrong, where (flow, node, ``file:line``, parameter, file, column) and
what to do. Validation collects every problem and raises them together.

::

    RaylineError
    ├── DefinitionError          the flow cannot be built or compiled (exit code 2)
    │   ├── TracingError         a flow body did something tracing cannot record
    │   ├── SpecError            a YAML flow file is malformed or unsafe
    │   ├── ValidationError      compile-time checks failed; holds every Problem
    │   └── SpecValidationError  every problem of one YAML flow file (both of the above)
    ├── UsageError               bad CLI input: unknown run, bad -p syntax (exit code 2)
    ├── RunFailedError           a run ended FAILED (exit code 1)
    ├── RunCancelledError        a run was cancelled (exit code 130)
    ├── TaskTimeoutError         one attempt of a task ran past its timeout
    ├── SkipRun                  a task decided there is nothing to do (context.skip)
    ├── TaskPreempted            a preempted task saved its state and stops (context.preempted)
    ├── SecretError              a Secret("NAME") cannot be resolved where its task runs
    ├── StoreError               a store (runs, artifacts, models) refused an operation
    │   ├── StoreUnusableError       the disk under a store is full, read-only or failing (exit code 4)
    │   ├── ArtifactIntegrityError   a stored artifact failed its checksum or signature
    │   ├── NotJsonError             a value to store is not JSON (also a TypeError)
    │   ├── UnsafeNameError          a name that could escape the store's root
    │   ├── LeaseLostError           another process owns the run now
    │   ├── FlowBusyError            another run holds the flow's slot (exit code 3)
    │   ├── RunBusyError             another process drives the run now (exit code 3)
    │   └── ModelNotFoundError       no such model, version or alias (exit code 2)
    ├── RolloutError             a new model version failed to deploy; the previous one serves
    └── InfrastructureError      Ray lost a worker, a node or the owner of an object

Exit codes, the one table every command follows (README, "Exit codes")::

    0    succeeded (a run SKIPPED by its own tasks too)
    1    the run failed, or an unexpected error
    2    a definition, validation or usage error
    3    nothing was done because the flow or the run is busy (skipped, or a resume lost a race)
    4    the store cannot be used: corrupt, read-only, full or unreachable (the CLI tells
         these apart from other errors by their cause: ``cli.main.store_failure``)
    130  cancelled
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_STORE, EXIT_CANCELLED = 0, 1, 2, 3, 4, 130
_EXIT_BY_STATUS = {"SUCCEEDED": EXIT_OK, "SUCCEEDED_WITH_WARNINGS": EXIT_OK, "SKIPPED": EXIT_OK,
                   "CANCELLED": EXIT_CANCELLED}  # fmt: skip


def exit_code_for_status(status: str) -> int:
    """The exit code of a command whose run ended in ``status`` (a ``RunStatus`` value)."""
    return _EXIT_BY_STATUS.get(str(status), EXIT_FAILED)


class RaylineError(Exception):
    """Base of every error rayline raises on purpose."""

    exit_code = EXIT_FAILED


class DefinitionError(RaylineError):
    """The flow definition cannot be built or compiled."""

    exit_code = EXIT_USAGE


class TracingError(DefinitionError):
    """A flow body did something that tracing cannot record (e.g. branching on a result)."""


class SpecError(DefinitionError):
    """A declarative (YAML) flow file is malformed or unsafe."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One compile-time problem: what, where and how to fix it."""

    message: str
    flow: str | None = None
    node: str | None = None
    location: str | None = None  # "file:line"
    hint: str | None = None

    def render(self) -> str:
        where = []
        if self.location:
            where.append(self.location)
        if self.flow:
            where.append(f"flow '{self.flow}'")
        if self.node:
            where.append(f"node '{self.node}'")
        head = ", ".join(where)
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f"\n    fix: {self.hint}"
        return text


class ValidationError(DefinitionError):
    """Compile-time checks failed. ``problems`` holds every one of them."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} found before running:"]
        lines += [f"  - {p.render()}" for p in self.problems]
        super().__init__("\n".join(lines))


class SpecValidationError(SpecError, ValidationError):
    """Every problem found in a YAML flow file, raised together: a ``SpecError`` (the file is
    malformed or unsafe) and a ``ValidationError`` (``problems``, each with its ``file:line``)."""


class UsageError(RaylineError):
    """Bad command-line input."""

    exit_code = EXIT_USAGE


class RunFailedError(RaylineError):
    """A run ended FAILED (``exit_code`` 1, as every ``RaylineError``)."""


class RunCancelledError(RaylineError):
    """A run was cancelled."""

    exit_code = EXIT_CANCELLED


class TaskTimeoutError(RaylineError):
    """One attempt of a task ran past its ``timeout``."""


class SkipRun(RaylineError):
    """Raised by ``rayline.context.skip(reason)``: the task and everything downstream of it are
    SKIPPED, and so is the run unless another task failed. Never retried."""

    retryable = False


class TaskPreempted(RaylineError):
    """Raised by a task once ``rayline.context.preempted()`` is true and it has saved its state:
    the attempt ends PREEMPTED, the task is queued again and resumes later. Never retried."""

    retryable = False


class SecretError(RaylineError):
    """A ``rayline.Secret("NAME")`` cannot be resolved on the worker: no such environment
    variable nor file, or its file is readable by others. The message names the secret, the
    node and how to set it; never a secret's value."""


class StoreError(RaylineError):
    """The run store, artifact store or model registry refused an operation."""


class ArtifactIntegrityError(StoreError):
    """A stored artifact failed its checksum or signature check: it is never used."""


class StoreUnusableError(StoreError):
    """A store's disk refused a write: full, over quota, read-only or failing. A run whose task
    output could not be written for this reason ends FAILED (resumable once there is room) and
    the CLI exits with code 4, as for any store that cannot be used."""

    exit_code = EXIT_STORE


class NotJsonError(StoreError, TypeError):
    """A value to be stored as JSON text (params, counters, metrics, lineage) is not JSON."""


class UnsafeNameError(StoreError, ValueError):
    """A name that could escape a store's root (``..``, ``/``, NUL, encoded traversal)."""


class LeaseLostError(StoreError):
    """Another process took over the run; this one must stop writing."""


class FlowBusyError(StoreError):
    """Another run of the flow holds its slot (overlap ``skip``/``queue``), so this one may not
    run now; the CLI exits with code 3, as for a skipped ``rayline run``. ``held_by``: that run."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, *, held_by: str | None = None) -> None:
        super().__init__(message)
        self.held_by = held_by


class RunBusyError(StoreError):
    """Another live process drives the run (two ``rayline resume`` of one run: the loser gets
    this and changes nothing); the CLI exits with code 3. ``held_by``: that run."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, *, held_by: str | None = None) -> None:
        super().__init__(message)
        self.held_by = held_by


class ModelNotFoundError(StoreError, LookupError):
    """No such model, version or alias in the registry (the CLI exits with code 2)."""

    exit_code = 2


class RolloutError(RaylineError):
    """A new version failed to deploy; ``serving`` is the version serving now (or None)."""

    def __init__(self, message: str, *, app: str, failed: int, serving: int | None) -> None:
        super().__init__(message)
        self.app, self.failed, self.serving = app, failed, serving


class InfrastructureError(RaylineError):
    """Ray lost a worker, a node or an object's owner: not the user's code."""
