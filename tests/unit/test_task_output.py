"""Capturing a task's output (engine/task_output.py) and keeping it as task logs under the
artifact store (store/task_logs.py): tee, cap, routing between concurrent attempts, flushes."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from rayline.cli.logs import new_output
from rayline.engine.task_output import CapturedOutput, capture
from rayline.store.artifacts import ArtifactStore
from rayline.store.task_logs import TaskLogs, node_dir, split_cut
from tests.coordination import wait_for


@pytest.fixture
def logs(tmp_path: Path) -> TaskLogs:
    return TaskLogs(ArtifactStore.open(tmp_path / "home"))


def test_print_is_kept_and_still_reaches_the_console(capsys):
    with capture(None) as out:
        print("hello")
        print("oops", file=sys.stderr)
    assert out.data() == b"hello\noops\n"
    seen = capsys.readouterr()
    assert seen.out == "hello\n" and seen.err == "oops\n"


def test_logging_to_stderr_is_captured():
    import logging

    with capture(None) as out:
        handler = logging.StreamHandler(sys.stderr)  # made inside the task, as basicConfig would
        logger = logging.getLogger("tests.task_output")
        logger.addHandler(handler)
        try:
            logger.error("logged line")
        finally:
            logger.removeHandler(handler)
    text = out.data().decode()
    assert "logged line" in text


def test_output_past_the_cap_keeps_head_and_tail_and_says_so():
    out = CapturedOutput(limit=1000)
    out.add("H" * 400)
    for i in range(200):
        out.add(f"line {i:04d}\n")
    data = out.data()
    head, cut, tail = split_cut(data)
    assert head.startswith(b"H" * 400) and len(head) == 500
    assert len(tail) == 500 and tail.endswith(b"line 0199\n")
    assert cut == 400 + 200 * 10 - 1000
    assert b"capped at 1000 bytes (RAYLINE_TASK_LOG_LIMIT)" in data


def test_concurrent_attempts_in_one_process_keep_their_own_output():
    results: dict[str, bytes] = {}
    barrier = threading.Barrier(2)

    def attempt(name: str) -> None:
        with capture(None) as out:
            barrier.wait()
            for i in range(200):
                print(f"{name} {i}")
        results[name] = out.data()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, other in (("a", "b"), ("b", "a")):
        lines = results[name].decode().splitlines()
        assert lines == [f"{name} {i}" for i in range(200)], other


def test_a_thread_the_task_started_is_captured_when_the_attempt_owns_its_process():
    def worker() -> None:
        print("from a thread")

    with capture(None, owns_process=True) as owned:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    with capture(None) as shared:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert owned.data() == b"from a thread\n"
    assert shared.data() == b""


def test_the_log_is_flushed_while_the_attempt_runs_and_once_more_at_the_end(logs):
    def sink(data: bytes, final: bool) -> None:
        logs.write("run1", "step", 1, data, final=final)

    with capture(sink, interval=0.05):
        print("early line")
        wait_for(lambda: logs.read("run1", "step", 1) == "early line\n", 10, "the periodic flush")
        print("late line")
    assert logs.read("run1", "step", 1) == "early line\nlate line\n"


def test_a_failing_sink_never_fails_the_attempt():
    def sink(data: bytes, final: bool) -> None:
        raise OSError("disk full")

    with capture(sink, interval=0.01) as out:
        print("still fine")
    assert out.data() == b"still fine\n"


def test_task_logs_list_nodes_and_attempts_including_unsafe_node_ids(logs):
    logs.write("r1", "square[0]", 1, b"zero\n")
    logs.write("r1", "train", 2, b"two\n")
    logs.write("r1", "train", 1, b"one\n")
    assert node_dir("square[0]").startswith("_") and node_dir("train") == "train"
    assert sorted(logs.nodes("r1")) == ["square[0]", "train"]
    assert logs.attempts("r1", "train") == [1, 2]
    assert [(p.node_id, p.attempt, p.text) for p in logs.parts("r1", ["train"])] == [
        ("train", 1, "one\n"), ("train", 2, "two\n")]
    assert logs.read("r1", "nothing", 1) is None and logs.attempts("r1", "nothing") == []
    assert Path(logs.location("r1", "train", 2)).read_text() == "two\n"


def test_following_a_capped_log_prints_each_byte_once_and_says_what_was_cut():
    out = CapturedOutput(limit=100)
    out.add("a" * 40)
    first, offset = new_output(out.data(), 0)
    assert first == b"a" * 40
    out.add("b" * 30 + "c" * 100)
    more, offset = new_output(out.data(), offset)
    # the head ends with 10 b's; 20 b's and 50 c's fell into the cut; the tail holds 50 c's
    assert more == b"b" * 10 + b"\n[rayline: 70 bytes of this log were cut (RAYLINE_TASK_LOG_LIMIT)]\n" + b"c" * 50
    out.add("d" * 5)
    last, offset = new_output(out.data(), offset)
    assert last == b"d" * 5
    assert new_output(out.data(), offset)[0] == b""


_FD_SCRIPT = """
import os, subprocess, sys
from rayline.engine.task_output import capture
logs = []
for attempt in (1, 2):
    with capture(lambda data, final: logs.append((attempt, final, data)), owns_process=True,
                 fd_level=True) as out:
        print(f"from python {attempt}")
        subprocess.run(["echo", f"from a subprocess {attempt}"], check=True)
        os.write(2, f"from fd 2 {attempt}\\n".encode())
    open(sys.argv[1] + f".{attempt}", "wb").write(out.data())
finals = [a for a, final, _ in logs if final]
open(sys.argv[1] + ".finals", "w").write(repr(finals))
"""


def test_file_descriptor_capture_keeps_what_subprocesses_print_without_doubling_python_output(tmp_path):
    import subprocess

    # In its own process: the descriptors stay teed for the rest of the process, as in a worker.
    done = subprocess.run([sys.executable, "-c", _FD_SCRIPT, str(tmp_path / "log")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    for k in (1, 2):
        text = (tmp_path / f"log.{k}").read_text()
        assert sorted(text.splitlines()) == [f"from a subprocess {k}", f"from fd 2 {k}", f"from python {k}"]
    assert (tmp_path / "log.finals").read_text() == "[1, 2]"
    # still on the console: the descriptors' former targets
    assert "from python 1\n" in done.stdout and "from a subprocess 2\n" in done.stdout
    assert done.stderr == "from fd 2 1\nfrom fd 2 2\n"
