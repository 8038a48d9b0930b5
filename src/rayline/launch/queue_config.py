"""Queues that share one cluster, declared in a YAML file (``configs/queues.yaml``).

The file that ``RAYLINE_QUEUES`` names is read with ``yaml.safe_load`` and validated; without
it there are no queues and admission adds nothing to a run. A flow names its queue and priority
(``@flow(queue="nightly", priority=5)``); a flow that names none runs in ``default`` (which the
file may declare, else it has no quota). A queue's ``priority`` is the priority of its flows
that name none.

Example ``configs/queues.yaml``::

    queues:
      - name: serving-warmup
        priority: 100
      - name: nightly
        priority: 10
        quota: {cpus: 8, gpus: 2, memory: 68719476736}
        max_concurrent_runs: 2
        preemptible: false
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rayline.errors import UsageError

#: The environment variable naming the queues file.
QUEUES_ENV = "RAYLINE_QUEUES"
DEFAULT_QUEUE = "default"


class Quota(BaseModel):
    """The most a queue's admitted tasks hold at once; None: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpus: float | None = Field(default=None, ge=0)
    gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=0)


class QueueSpec(BaseModel):
    """One queue: its name, default priority, quota, concurrent runs and preemptibility."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=128)
    priority: int = 0
    quota: Quota = Quota()
    max_concurrent_runs: int | None = Field(default=None, ge=1)
    #: its running tasks may be asked to give their resources to higher-priority work
    preemptible: bool = False
    #: seconds a preempted task has to save its state before it is cancelled
    preempt_grace_s: float = Field(default=30.0, ge=0)


class QueuesFile(BaseModel):
    """The whole file: ``queues:``, a list of ``QueueSpec``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    queues: tuple[QueueSpec, ...] = ()

    @field_validator("queues")
    @classmethod
    def _unique(cls, queues: tuple[QueueSpec, ...]) -> tuple[QueueSpec, ...]:
        names = [q.name for q in queues]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"queue(s) {twice} declared more than once")
        return queues

    def queue(self, name: str | None) -> QueueSpec:
        """The queue called ``name`` (``default`` when None); an undeclared ``default`` is a
        queue without quota.

        Raises:
            UsageError: ``name`` is not declared.
        """
        name = name or DEFAULT_QUEUE
        for q in self.queues:
            if q.name == name:
                return q
        if name == DEFAULT_QUEUE:
            return QueueSpec(name=DEFAULT_QUEUE)
        known = ", ".join(q.name for q in self.queues) or "none"
        raise UsageError(f"queue '{name}' is not declared in ${QUEUES_ENV}; declared: {known}")


def load_queues(path: str | Path) -> QueuesFile:
    """Read and validate the queues file at ``path``.

    Raises:
        UsageError: the file cannot be read, is not YAML, or does not validate (every problem).
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read the queues file {path}: {exc}") from None
    try:
        return QueuesFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise UsageError(f"the queues file {path} is not valid:\n" + "\n".join(lines)) from None


def configured_queues() -> QueuesFile | None:
    """The queues of the file ``$RAYLINE_QUEUES`` names, or None when it names none."""
    path = os.environ.get(QUEUES_ENV)
    return load_queues(path) if path else None
