"""The job runner: a daemon thread that drives one backend job and reports through a queue.

Check → create → upload → start → poll → download, each finished frame written atomically into
the take folder as soon as the backend has it. Inputs may arrive while the thread runs (an
`InputFeed`: Blender hands each rendered file over as it is written); a few of them are uploaded
at once. The thread never touches bpy: it posts typed messages, and Blender's main thread (a
timer, or a background-mode operator) drains them. A runner can also re-attach to a job that
already exists (by id) and fetch what it is missing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .frames import frame_file
from .http import BackendClient, BackendError, BackendUnreachable, api_mismatch
from .launcher import LaunchError
from .request import Request, from_job

TERMINAL_STATES = frozenset({"done", "failed", "canceled"})
# While Blender renders a take's inputs, the runner asks the backend about the job this often:
# it keeps an idle-exiting local backend up, and a backend that went away is noticed (and said)
# within the reconnect grace, not at the next upload, nor never if that was the last.
HEARTBEAT_S = 5.0


# --- messages (worker thread → main thread) -------------------------------------------------


@dataclass(frozen=True)
class Created:
    """The job exists on the backend (new, or found again by id)."""

    take: str
    job_id: str
    kind: str
    request_json: str


@dataclass(frozen=True)
class Progress:
    take: str
    job_id: str
    state: str
    stage: str
    done: int
    total: int
    fraction: float
    frames_fetched: int


@dataclass(frozen=True)
class FrameReady:
    take: str
    job_id: str
    frame: int
    path: Path


@dataclass(frozen=True)
class Done:
    take: str
    job_id: str
    directory: Path
    frames: tuple[int, ...]


@dataclass(frozen=True)
class Failed:
    take: str
    job_id: str | None
    message: str
    unreachable: bool = False  # no backend answered: the job itself may live on there


@dataclass(frozen=True)
class Canceled:
    take: str
    job_id: str | None
    frames_fetched: int


Message = Created | Progress | FrameReady | Done | Failed | Canceled
FINAL = (Done, Failed, Canceled)


class _Stop(Exception):
    """The runner was told to stop (cancel or detach) between two steps."""


class _Refused(Exception):
    """The preflight found that the backend cannot run this request; nothing was created."""


class InputFeed:
    """Input files handed from Blender's main thread to a runner while it runs.

    The main thread `put()`s (pass, frame, file) as each render is written and `close()`s the feed
    after the last one; the runner uploads each as it comes. Thread-safe.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._items: queue.Queue[tuple[str, int, Path] | None] = queue.Queue()
        self._closed = False

    @classmethod
    def complete(cls, inputs: Mapping[tuple[str, int], Path]) -> InputFeed:
        """A closed feed holding inputs that are all on disk already."""
        feed = cls(len(inputs))
        for (pass_name, frame), path in sorted(inputs.items()):
            feed.put(pass_name, frame, path)
        feed.close()
        return feed

    def put(self, pass_name: str, frame: int, path: Path) -> None:
        if self._closed:
            raise RuntimeError("the input feed is closed")
        self._items.put((pass_name, frame, path))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._items.put(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def next(self, timeout: float) -> tuple[str, int, Path] | None:
        """The next input; None once the feed is closed and empty. Raises queue.Empty when
        nothing came within `timeout` (the runner then checks whether it was told to stop)."""
        return self._items.get(timeout=timeout)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that it either exists complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _Uploads:
    """One job's inputs, sent by a few threads at once; each upload borrows a connection of its
    own from the shared client. Once `stopped()` says so, or one upload failed, no further upload
    starts (those in flight finish)."""

    def __init__(
        self,
        client: BackendClient,
        job_id: str,
        workers: int,
        stopped: Callable[[], bool],
        on_sent: Callable[[int], None],
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._stopped = stopped
        self._on_sent = on_sent
        self._todo: queue.Queue[tuple[str, int, Path] | None] = queue.Queue()
        self._state = threading.Condition()
        self._pending = 0  # handed over, not yet finished (sent, failed or skipped)
        self._sent = 0
        self._error: Exception | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"framesmith-upload-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, pass_name: str, frame: int, path: Path) -> None:
        with self._state:
            self._pending += 1
        self._todo.put((pass_name, frame, path))

    def wait(self, timeout: float) -> bool:
        """True once every input handed over was sent, or one upload failed."""
        with self._state:
            return self._state.wait_for(
                lambda: self._pending == 0 or self._error is not None, timeout
            )

    def raise_error(self) -> None:
        """Raise the first upload's error, if one failed."""
        with self._state:
            error = self._error
        if error is not None:
            raise error

    def close(self) -> None:
        """Let the threads end once the uploads they have in flight are done."""
        for _ in self._threads:
            self._todo.put(None)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._todo.get()) is not None:
            try:
                if not self._halted():
                    self._send(*item)
            except Exception as exc:  # the runner raises it on its own thread
                with self._state:
                    self._error = self._error or exc
            finally:
                with self._state:
                    self._pending -= 1
                    self._state.notify_all()

    def _halted(self) -> bool:
        with self._state:
            failed = self._error is not None
        return failed or self._stopped()

    def _send(self, pass_name: str, frame: int, path: Path) -> None:
        self._client.upload(self._job_id, pass_name, frame, path.read_bytes())
        with self._state:
            self._sent += 1
            self._on_sent(self._sent)  # under the lock: the counts are posted in order


class JobRunner:
    """Drives one job on a daemon thread; `messages` receives its progress and its one final
    message (Done, Failed or Canceled).

    `connect` runs on the worker thread (it may start a local backend). Give either `request` and
    its inputs — a mapping (pass, frame) → file, or an `InputFeed` still being filled — for a new
    job, or `job_id` to re-attach to an existing one. Up to `upload_workers` inputs are uploaded
    at once; the job is started once every input the feed delivered was uploaded.

    Before it reads any input, the thread checks the backend (the preflight): it must speak this
    add-on's API version and, for a new job, hold the models the request names. A backend that
    cannot run the take ends it with a Failed message, and no job is created. `ready` (a
    `threading.Event`) is set once the preflight passed, so Blender renders the first frame only
    after `runner.ready.is_set()`; it is also set when the runner ends for any reason, so a waiter
    is never left hanging (look at `messages` for why it ended).
    """

    def __init__(
        self,
        take: str,
        connect: Callable[[], BackendClient],
        output_dir: Path,
        *,
        request: Request | None = None,
        inputs: Mapping[tuple[str, int], Path] | InputFeed | None = None,
        job_id: str | None = None,
        poll_interval: float = 0.25,
        reconnect_grace: float = 20.0,
        upload_workers: int = 4,
        heartbeat_interval: float = HEARTBEAT_S,
    ) -> None:
        if (request is None) == (job_id is None):
            raise ValueError("give a request for a new job, or the id of an existing one")
        if upload_workers < 1:
            raise ValueError("upload_workers must be at least 1")
        self.take = take
        self.output_dir = output_dir
        self.request = request
        self.inputs = inputs if isinstance(inputs, InputFeed) else InputFeed.complete(inputs or {})
        self.job_id = job_id
        self.messages: queue.Queue[Message] = queue.Queue()
        self.ready = threading.Event()
        self._connect = connect
        self._poll_interval = poll_interval
        self._reconnect_grace = reconnect_grace
        self._upload_workers = upload_workers
        self._heartbeat_interval = heartbeat_interval
        self._uploads: _Uploads | None = None
        self._cancel = threading.Event()
        self._abort_message: str | None = None
        self._detach = threading.Event()
        self._wake = threading.Event()
        self._fetched: set[int] = set()
        self._thread: threading.Thread | None = None

    # --- control (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"framesmith-{self.take}")
        self._thread.daemon = True
        self._thread.start()

    def cancel(self) -> None:
        """Cancel the job on the backend too; the final message will be Canceled."""
        self._cancel.set()
        self._wake.set()

    def abort(self, message: str) -> None:
        """Cancel because something on Blender's side failed (a render): the job is canceled on
        the backend and the final message is Failed with `message`."""
        self._abort_message = message
        self.cancel()

    def detach(self) -> None:
        """Stop this thread but leave the backend job running (it can be re-attached later)."""
        self._detach.set()
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    # --- the thread --------------------------------------------------------------------------

    def run(self) -> None:
        """The thread's body (call it directly to run the job on the calling thread)."""
        client: BackendClient | None = None
        try:
            client = self._connect()
            self._post(self._run(client))
        except _Stop:
            if self._cancel.is_set():
                final = self._cancel_on_backend(client)
                if self._abort_message is not None:
                    final = Failed(self.take, self.job_id, self._abort_message)
                self._post(final)
            # detached: nothing more to say; the job lives on in the backend
        except _Refused as exc:
            self._post(Failed(self.take, self.job_id, str(exc)))
        except (BackendUnreachable, LaunchError) as exc:
            self._post(Failed(self.take, self.job_id, _sentence(exc), unreachable=True))
        except BackendError as exc:
            self._post(Failed(self.take, self.job_id, _sentence(exc)))
        except OSError as exc:
            self._post(
                Failed(self.take, self.job_id, f"a frame file could not be read or written: {exc}")
            )
        except Exception as exc:  # a bug must still end the job for the user, not hang it
            self._post(Failed(self.take, self.job_id, f"unexpected error: {exc!r}"))
        finally:
            self.ready.set()  # whatever ended the runner, nobody waits on it any more
            if self._uploads is not None:
                self._uploads.close()
                self._uploads.join()  # after the final message: uploads in flight end first
            if client is not None:
                client.close()

    def _run(self, client: BackendClient) -> Message:
        self._check()
        self._preflight(client)
        if self.job_id is None:
            self._create_and_upload(client)
        else:
            job = client.job(self.job_id)
            request = self.request or from_job(job)
            self._post(Created(self.take, self.job_id, request.kind.value, request.to_json()))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lost_since: float | None = None
        while True:
            self._check()
            try:
                job = client.job(self._id)
                lost_since = None
            except BackendUnreachable:
                # A restarting backend resumes its jobs: keep trying for a while.
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > self._reconnect_grace:
                    raise
                self._wait()
                continue
            state = job["state"]
            if state == "awaiting_inputs":
                # Only a re-attached job is polled before its start: its inputs never all came.
                return Failed(
                    self.take,
                    self._id,
                    "Blender stopped before all the inputs were sent; run the take again",
                )
            self._fetch(client, job["finished_frames"])
            progress = job.get("progress", {})
            self._post(
                Progress(
                    self.take,
                    self._id,
                    state,
                    str(progress.get("stage", "")),
                    int(progress.get("done", 0)),
                    int(progress.get("total", 0)),
                    float(progress.get("fraction", 0.0)),
                    len(self._fetched),
                )
            )
            if state == "done":
                frames = tuple(job["frames"])
                self._fetch(client, frames)  # frames finished between the poll and the fetch
                return Done(self.take, self._id, self.output_dir, frames)
            if state == "failed":
                return Failed(self.take, self._id, job.get("error") or "the job failed")
            if state == "canceled":
                return Canceled(self.take, self._id, len(self._fetched))
            self._wait()

    def _preflight(self, client: BackendClient) -> None:
        """Refuse before any input is read: a backend of another API version, or (new jobs) one
        that lacks a model the request needs or refuses the request."""
        refusal = api_mismatch(client.health(), client.connection.url)
        if refusal is None and self.job_id is None:
            refusal = self._check_request(client)
        if refusal is not None:
            raise _Refused(refusal)
        self.ready.set()

    def _check_request(self, client: BackendClient) -> str | None:
        assert self.request is not None
        try:
            answer = client.check_job(self.request.job_body())
        except BackendError as exc:
            if exc.status in (404, 405):
                return None  # a backend older than the check: its start still names what lacks
            raise
        if not isinstance(answer, dict) or answer.get("ok"):
            return None
        problems = answer.get("problems") or ()
        return " ".join(str(p) for p in problems) or "the backend cannot run this request"

    def _create_and_upload(self, client: BackendClient) -> None:
        assert self.request is not None
        job = client.create_job(self.request.job_body(), idempotency_key=self.take)
        job_id = self.job_id = job["id"]
        self._post(Created(self.take, job_id, self.request.kind.value, self.request.to_json()))

        def sent(count: int) -> None:
            total = max(self.inputs.expected, count)
            self._post(
                Progress(self.take, job_id, "awaiting_inputs", "uploading", count, total, 0.0, 0)
            )

        self._uploads = _Uploads(client, job_id, self._upload_workers, self._told_to_stop, sent)
        beat = _Heartbeat(client, job_id, self._heartbeat_interval, self._reconnect_grace)
        try:
            self._upload_all(self._uploads, beat)
        except (BackendError, OSError):
            self._cancel_quietly(client)  # a half-fed job must not wait for inputs forever
            raise
        self._check()
        client.start(job_id)

    def _upload_all(self, uploads: _Uploads, beat: _Heartbeat) -> None:
        """Hand each input to the uploaders as the feed delivers it; return once all were sent."""
        while True:
            self._check()
            uploads.raise_error()
            beat.check()
            try:
                item = self.inputs.next(timeout=self._poll_interval)
            except queue.Empty:
                continue  # the next render is not written yet
            if item is None:
                break
            uploads.submit(*item)
        while not uploads.wait(self._poll_interval):
            self._check()
            beat.check()
        uploads.raise_error()

    def _fetch(self, client: BackendClient, frames: Iterable[int]) -> None:
        for frame in frames:
            if frame in self._fetched:
                continue
            self._check()
            path = self.output_dir / frame_file(frame)
            atomic_write(path, client.output(self._id, frame))
            self._fetched.add(frame)
            self._post(FrameReady(self.take, self._id, frame, path))

    def _cancel_on_backend(self, client: BackendClient | None) -> Message:
        if client is not None and self.job_id is not None:
            try:
                client.cancel(self.job_id)
            except BackendError as exc:
                # 409: it ended just before the cancel arrived; its frames stay on the backend
                # for a re-import, and the take stops here as asked.
                if exc.status != 409:
                    return Failed(
                        self.take, self.job_id, f"could not cancel the job: {_sentence(exc)}"
                    )
            except BackendUnreachable as exc:
                return Failed(self.take, self.job_id, f"could not cancel the job: {_sentence(exc)}")
        return Canceled(self.take, self.job_id, len(self._fetched))

    def _cancel_quietly(self, client: BackendClient) -> None:
        """Best effort: the take fails with its first error whatever the cancel answers."""
        if self.job_id is not None:
            with contextlib.suppress(BackendError, BackendUnreachable):
                client.cancel(self.job_id)

    # --- helpers -----------------------------------------------------------------------------

    @property
    def _id(self) -> str:
        assert self.job_id is not None
        return self.job_id

    def _told_to_stop(self) -> bool:
        return self._cancel.is_set() or self._detach.is_set()

    def _check(self) -> None:
        """Stop between two steps when told to (cancel or detach)."""
        if self._told_to_stop():
            raise _Stop

    def _wait(self) -> None:
        self._wake.wait(self._poll_interval)

    def _post(self, message: Message) -> None:
        self.messages.put(message)


class _Heartbeat:
    """The job's state, asked every `interval` s while its inputs are rendered and sent."""

    def __init__(self, client: BackendClient, job_id: str, interval: float, grace: float) -> None:
        self._client = client
        self._job_id = job_id
        self._interval = interval
        self._grace = grace
        self._last = time.monotonic()
        self._lost_since: float | None = None

    def check(self) -> None:
        """Raise when the backend stopped answering for longer than the grace, or when the job
        no longer waits for inputs (expired, canceled or deleted on the backend)."""
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        try:
            job = self._client.job(self._job_id)
        except BackendUnreachable as exc:
            self._lost_since = self._lost_since or now
            if now - self._lost_since > self._grace:
                raise BackendUnreachable(
                    f"the backend stopped answering while Blender was rendering the take ({exc});"
                    " the take stopped: start the backend again and run the take again"
                ) from None
            return
        self._lost_since = None
        state = job.get("state") if isinstance(job, dict) else None
        if state != "awaiting_inputs":
            why = job.get("error") if isinstance(job, dict) else None
            raise _Refused(
                f"the job stopped waiting for this take's inputs on the backend (it is {state})"
                + (f": {why}" if why else "; run the take again")
            )


def _sentence(exc: Exception) -> str:
    if isinstance(exc, BackendError):
        return exc.detail
    return str(exc)
