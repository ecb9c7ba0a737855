"""Promise 18: a job that crashes the backend is not resumed forever.

A job whose run kills the backend process (SIGKILL at the same frame on every run) is resumed
after the first crash, and after the second crash in a row without a new finished frame it
fails at the next start with a sentence instead of taking the backend down a third time. The
backend carries on and serves other jobs. (A job that makes progress between crashes keeps
resuming: promise 1 kills a job three times and it completes.)
"""

from __future__ import annotations

import contextlib
import signal

from backend.files import DIE_BEFORE_RENAME_ENV
from tests.backend.server import Backend, start_and_finish, wait_for
from tests.promises.support import create_inbetween, square_keys, start

KEYS = {0: 4.0, 8: 36.0}
# The backend kills itself when it is about to publish this output frame (no input has the name).
FATAL_FRAME = "000004.png"


def run_until_killed(b: Backend) -> None:
    """Start the backend (it may die before it is ready) and wait until the fault kills it."""
    with contextlib.suppress(RuntimeError):  # it may die before it is ready
        b.start()
    assert b.proc is not None
    assert b.proc.wait(120) == -signal.SIGKILL, b.output()


def test_a_job_that_kills_the_backend_twice_fails_at_the_next_start(make_backend) -> None:
    b: Backend = make_backend("crashing", env={DIE_BEFORE_RENAME_ENV: FATAL_FRAME})
    b.start()
    with b.client() as c:
        job_id = create_inbetween(c, square_keys(KEYS), range(0, 9))["id"]
        start(c, job_id)
    assert b.proc.wait(120) == -signal.SIGKILL, "the fault did not kill the backend"
    run_until_killed(b)  # the first crash is resumed, and crashes again

    b.start()  # the fault is still armed: resuming the job would kill the backend once more
    with b.client() as c:
        failed = wait_for(c, job_id, {"done", "failed", "canceled"})
        assert failed["state"] == "failed", failed
        assert "stopped unexpectedly during 2 runs" in failed["error"], failed["error"]
        assert "create the job again" in failed["error"]
        assert len(failed["finished_frames"]) >= 4  # what it finished before the crashes stays
        other = create_inbetween(c, square_keys({0: 4.0, 2: 12.0}), range(0, 3))["id"]
        start_and_finish(c, other)
    assert b.proc.poll() is None, "the backend died serving the other job"
