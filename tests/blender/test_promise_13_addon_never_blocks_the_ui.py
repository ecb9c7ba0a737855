"""Promise 13: the add-on never blocks Blender's UI. Against a backend that answers only after
30 s, every operator's interactive path — invoke() of stylize, in-between, re-import, cancel,
backend start/check/stop, open folder, each modal timer tick and Esc, the app timer, and the
file-load handler that re-attaches jobs — returns to Blender in under 50 ms.

How the interactive path is reached headless: the bpy module has a window but no event loop, so
`bpy.ops.x('INVOKE_DEFAULT')` runs execute() (no event to invoke with). The operators that have
an invoke() are called through twins whose execute() calls the real invoke() on the real
operator instance (tests/blender/invoking.py); their modal() is then fed timer and Esc events.
Operators without invoke() (backend_stop, open_folder) run execute() in the UI too: they are
called with 'INVOKE_DEFAULT'.

The stalled backend is a stub (the fault under test): it accepts each connection, reads the
request and answers 503 only after 30 s. A blocking HTTP call anywhere on these paths makes the
call take the client's 30 s timeout and the test fail.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from tests.blender.invoking import ESC, TIMER, Invoked, Invoker
from tests.blender.support import ADDON

LIMIT = 0.050  # seconds
STALL = 30.0  # seconds the stub waits before it answers


@pytest.fixture
def stalled_backend() -> Iterator[str]:
    """A loopback HTTP server that takes every request and answers only after 30 s."""
    release = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []

    def answer_late(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            release.wait(STALL)
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    def accept() -> None:
        while not release.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            threading.Thread(target=answer_late, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    release.set()  # let the stalled clients go (they get a 503 and end)
    acceptor.join(5)
    server.close()


@pytest.fixture
def invoker(addon: ModuleType) -> Iterator[Invoker]:
    made = Invoker()
    yield made
    made.close()


class Stopwatch:
    """Times each call; keeps every figure for the report."""

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}
        self.through_ops: dict[str, float] = {}  # the same calls, with bpy.ops' own overhead

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.figures[name] = time.perf_counter() - started

    def invoke(self, name: str, twin: Invoked, **props: Any) -> Any:
        """Call an operator's invoke(); the figure is the time spent inside invoke() itself, as
        Blender's UI calls it (the Python bpy.ops wrapper adds a view-layer update around it)."""
        started = time.perf_counter()
        try:
            return twin.call(**props)
        finally:
            self.through_ops[name] = time.perf_counter() - started
            self.figures[name] = twin.seconds[-1]

    def report(self) -> str:
        lines = []
        for name, seconds in self.figures.items():
            line = f"{name:<40} {seconds * 1000:8.2f} ms"
            if name in self.through_ops:
                line += f"   ({self.through_ops[name] * 1000:.2f} ms through bpy.ops)"
            lines.append(line)
        return "\n".join(lines)


def test_promise_13_addon_never_blocks_the_ui(
    shot: Any,
    prefs: Any,
    runtime: ModuleType,
    session_state: ModuleType,
    invoker: Invoker,
    stalled_backend: str,
    tmp_path: Path,
) -> None:
    prefs.backend_mode = "REMOTE"
    prefs.url = stalled_backend
    prefs.token = "t" * 24
    props = shot.framesmith
    props.prompt = "ink"
    props.controlnet_depth.enabled = True
    shot.frame_end = 4
    reattach = sys.modules[f"{ADDON}.operators.reattach"]
    timed = Stopwatch()

    # stylize and in-between: invoke, modal ticks while the runner's check of the backend hangs
    # (nothing renders before the backend said it can run the take), Esc
    for name in ("stylize", "inbetween"):
        twin = invoker(name, f"FRAMESMITH_OT_{name}")
        assert timed.invoke(f"{name} invoke", twin) == {"RUNNING_MODAL"}
        op = twin.last
        take = props.jobs[props.active_job].take
        for tick in range(5):
            assert timed(f"{name} modal tick {tick}", lambda op=op: op.modal(bpy.context, TIMER)) == {"PASS_THROUGH"}  # fmt: skip
        assert runtime.watching(take) and runtime.rendering(take)  # still waiting, not rendering
        assert timed(f"{name} Esc", lambda op=op: op.modal(bpy.context, ESC)) == {"CANCELLED"}

    # re-import a job by id, follow it modally, cancel it while it is watched
    entry = runtime.add_job(shot, "reimported", "INBETWEEN", tmp_path / "r", 1, 4)
    entry.job_id, entry.state = "0123456789abcdef0123456789abcdef", "DETACHED"
    reimport = invoker("reimport", "FRAMESMITH_OT_reimport")
    assert timed.invoke("reimport invoke", reimport, job="reimported") == {"RUNNING_MODAL"}
    tick = timed("reimport modal tick", lambda: reimport.last.modal(bpy.context, TIMER))
    assert tick == {"PASS_THROUGH"}
    cancel = invoker("cancel", "FRAMESMITH_OT_cancel")
    assert timed.invoke("cancel invoke (watched job)", cancel, job="reimported") == {"FINISHED"}
    # cancel a job nobody watches: a runner re-attaches on its thread to cancel it
    other = runtime.add_job(shot, "unwatched", "STYLIZE", tmp_path / "u", 1, 4)
    other.job_id, other.state = "fedcba9876543210fedcba9876543210", "RUNNING"
    assert timed.invoke("cancel invoke (unwatched job)", cancel, job="unwatched") == {"FINISHED"}

    # the backend buttons
    for name in ("backend_check", "backend_start"):
        twin = invoker(name, f"FRAMESMITH_OT_{name}")
        assert timed.invoke(f"{name} invoke", twin) == {"FINISHED"}
    assert session_state.backend_status().busy  # the answer has not come: the call runs on a thread
    with pytest.raises(RuntimeError, match="stopped on its own machine"):
        timed("backend_stop (INVOKE_DEFAULT)", lambda: bpy.ops.framesmith.backend_stop("INVOKE_DEFAULT"))  # fmt: skip
    with pytest.raises(RuntimeError, match="folder does not exist"):  # no file browser opens
        timed(
            "open_folder (INVOKE_DEFAULT)",
            lambda: bpy.ops.framesmith.open_folder("INVOKE_DEFAULT", job="unwatched"),
        )

    # the app timer and the file-load handler that re-attaches unfinished jobs
    timed("app timer tick", runtime.tick)
    stuck = runtime.add_job(shot, "reopened", "INBETWEEN", tmp_path / "o", 1, 4)
    stuck.job_id, stuck.state = "00112233445566778899aabbccddeeff", "RUNNING"
    followed = timed("load_post: re-attach jobs", lambda: reattach.reattach_all(bpy.context))
    assert "reopened" in followed

    print(f"\nPromise 13, against a backend that answers after {STALL:.0f} s:")
    print(timed.report())
    slow = {name: s for name, s in timed.figures.items() if s >= LIMIT}
    assert not slow, f"these paths kept Blender waiting:\n{timed.report()}"
