"""Task logs: what each attempt of each task printed, kept with its run in the artifact store.

Layout under the artifact store's root (beside ``objects/``, so wherever the store lives — a
local folder or, through the store's file layer, a URL — every node and every later driver
reads the same logs)::

    logs/<run_id>/<node>/<attempt>.log     stdout and stderr of one attempt, interleaved

``<node>`` is the node id when it is a safe file name, else ``_`` and the hex of its UTF-8 bytes
(``square[0]`` -> ``_7371756172655b305d``). A log is rewritten whole (atomically, through
``ArtifactFiles.write``) each time the task flushes it, so a reader sees a complete snapshot or
none, and an object store that cannot append holds it too. The text is capped where it is
captured (``engine/task_output.py``): the head, a line saying how many bytes were cut, the tail.

Example::

    logs = TaskLogs(ArtifactStore.open(home))
    logs.write(run_id, "train", 1, b"epoch 1 loss 0.3\\n")
    logs.read(run_id, "train", 1)        # 'epoch 1 loss 0.3\\n'
    logs.attempts(run_id, "train")       # [1]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rayline.errors import StoreError, UnsafeNameError
from rayline.store.artifact_files import ArtifactFiles
from rayline.store.files import validate_name

__all__ = ["CUT_LINE", "LogPart", "TaskLogs", "node_dir", "split_cut"]

CUT_LINE = "\n[rayline: {cut} bytes cut here: the log of one attempt is capped at {limit} bytes " \
           "(RAYLINE_TASK_LOG_LIMIT); its head and tail are kept]\n"  # fmt: skip
_CUT = re.compile(rb"\n\[rayline: (\d+) bytes cut here: [^\]\n]*\]\n")


@dataclass(frozen=True, slots=True)
class LogPart:
    """One attempt's log: which node and attempt, and its text."""

    node_id: str
    attempt: int
    text: str


#: The line rayline writes before how an attempt ended (its traceback) at the end of its log.
END_NOTE = "--- rayline: how this attempt ended ---\n"


def node_dir(node_id: str) -> str:
    """The directory name of ``node_id``'s logs: the id itself when it is a safe name."""
    try:
        if not node_id.startswith("_"):
            return validate_name(node_id)
    except UnsafeNameError:
        pass
    return validate_name("_" + node_id.encode().hex())


def _node_id(name: str) -> str:
    if not name.startswith("_"):
        return name
    try:
        return bytes.fromhex(name[1:]).decode()
    except (ValueError, UnicodeDecodeError):
        return name


def split_cut(data: bytes) -> tuple[bytes, int, bytes]:
    """``(head, bytes cut, tail)`` of a capped log (``(data, 0, b"")`` for one that was not)."""
    m = _CUT.search(data)
    if m is None:
        return data, 0, b""
    return data[: m.start()], int(m.group(1)), data[m.end():]


class TaskLogs:
    """Write and read task logs under an artifact store (anything with its file layer).

    Args:
        files: the ``ArtifactStore`` (or any ``ArtifactFiles``) the run's outputs go to.
    """

    __slots__ = ("_files",)

    def __init__(self, files: Any) -> None:
        self._files: ArtifactFiles = getattr(files, "files", files)  # an ArtifactStore's file layer

    def location(self, run_id: str, node_id: str, attempt: int) -> str:
        """Where one attempt's log lives (a path under the store's root)."""
        return f"{self._files.url.rstrip('/')}/logs/{run_id}/{node_dir(node_id)}/{int(attempt)}.log"

    def write(self, run_id: str, node_id: str, attempt: int, data: bytes, *, final: bool = False) -> None:
        """Replace one attempt's log with ``data`` (fsynced when ``final``).

        Raises:
            StoreError: the write failed.
        """
        path = self._files.path("logs", validate_name(run_id), node_dir(node_id), f"{int(attempt)}.log")
        self._files.write(path, bytes(data), sync=final)

    def read_bytes(self, run_id: str, node_id: str, attempt: int) -> bytes | None:
        """One attempt's log as stored, or None if it has none (yet)."""
        path = self._files.path("logs", validate_name(run_id), node_dir(node_id), f"{int(attempt)}.log")
        try:
            return self._files.read(path)
        except FileNotFoundError:
            return None

    def read(self, run_id: str, node_id: str, attempt: int) -> str | None:
        """One attempt's log as text (undecodable bytes replaced), or None."""
        data = self.read_bytes(run_id, node_id, attempt)
        return None if data is None else data.decode("utf-8", errors="replace")

    def attempts(self, run_id: str, node_id: str) -> list[int]:
        """The attempts of ``node_id`` that have a log, in order."""
        directory = self._files.path("logs", validate_name(run_id), node_dir(node_id))
        found = [n.removesuffix(".log") for n in self._files.listdir(directory) if n.endswith(".log")]
        return sorted(int(n) for n in found if n.isdigit())

    def nodes(self, run_id: str) -> list[str]:
        """The node ids of ``run_id`` that have logs (in name order)."""
        return [_node_id(n) for n in self._files.listdir(self._files.path("logs", validate_name(run_id)))]

    def parts(self, run_id: str, node_ids: list[str] | None = None, attempt: int | None = None) -> list[LogPart]:
        """Every log of ``run_id`` (or of ``node_ids``, in that order; of one ``attempt``)."""
        out = []
        for node in node_ids if node_ids is not None else self.nodes(run_id):
            for k in self.attempts(run_id, node):
                if attempt is not None and k != attempt:
                    continue
                text = self.read(run_id, node, k)
                if text is not None:
                    out.append(LogPart(node, k, text))
        return out

    def tail(self, run_id: str, node_id: str, lines: int = 20) -> str | None:
        """The last ``lines`` lines the latest attempt printed (not the traceback rayline added
        after ``END_NOTE``: that is the task's error, shown apart), or None when it has none."""
        try:
            found = self.attempts(run_id, node_id)
            text = self.read(run_id, node_id, found[-1]) if found else None
        except StoreError:
            return None
        text = (text or "").rsplit(END_NOTE, 1)[0]
        if not text.strip():
            return None
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])
