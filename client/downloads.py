"""The model catalogue and its downloads as the add-on sees them: plain values read from the
backend's GET /v1/catalogue and /v1/downloads, and a runner that follows one download on a
thread of its own and posts typed messages for the main thread (stdlib only, no bpy).

The backend does the downloading (it owns the models folder, and may run on another machine);
the runner only starts it, polls it, cancels it on request, and when it ends reads the
catalogue and the model listing again, so the panel and the model menus show the new model.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backend import ModelChoices, check_models
from .http import BackendClient, BackendError, BackendUnreachable, Connection

POLL_S = 0.5  # between two looks at a running download
FINAL_STATES = frozenset(("done", "failed", "canceled"))
PIPELINE_TITLES = {"stylize": "Stylize", "inbetween": "In-between"}


def human_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}" if unit == "GB" else f"{size / scale:.0f} {unit}"
    return f"{size} bytes"


def _text(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return str(value) if isinstance(value, str | int | float) else default


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class CatalogueItem:
    """One model the backend can download."""

    name: str
    title: str
    kind: str
    licence: str
    size: int | None = None
    conditioning: str = ""  # a ControlNet's pass
    installed: bool = False
    needed_by: tuple[str, ...] = ()  # pipelines that have no model of this kind yet
    notes: str = ""

    @classmethod
    def from_json(cls, data: Any) -> CatalogueItem | None:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        needs = data.get("needed_by")
        return cls(
            name=data["name"],
            title=_text(data, "title", data["name"]),
            kind=_text(data, "kind"),
            licence=_text(data, "licence", "licence unknown"),
            size=_int(data.get("size")),
            conditioning=_text(data, "pass"),
            installed=data.get("installed") is True,
            needed_by=tuple(str(n) for n in needs) if isinstance(needs, list) else (),
            notes=_text(data, "notes"),
        )

    @property
    def summary(self) -> str:
        """What a person agrees to before the download starts: "4.27 GB, licence openrail"."""
        return f"{human_size(self.size)}, licence {self.licence}"


def parse_catalogue(answer: Any) -> tuple[CatalogueItem, ...]:
    models = answer.get("models") if isinstance(answer, dict) else None
    items = (CatalogueItem.from_json(m) for m in (models if isinstance(models, list) else []))
    return tuple(i for i in items if i is not None)


def fetch_catalogue(client: BackendClient) -> tuple[CatalogueItem, ...]:
    """The backend's catalogue; empty from a backend that has none (an older version)."""
    try:
        return parse_catalogue(client.catalogue())
    except BackendError as exc:
        if exc.status in (404, 503):
            return ()
        raise


def catalogue_or_none(connection: Connection) -> tuple[CatalogueItem, ...] | None:
    """The catalogue for a Check: None when it cannot be read (the check itself goes on)."""
    try:
        return fetch_catalogue(BackendClient(connection))
    except (BackendError, BackendUnreachable, OSError):
        return None


@dataclass(frozen=True)
class DownloadStatus:
    id: str
    name: str
    state: str  # queued, running, done, failed, canceled
    done_bytes: int = 0
    total_bytes: int | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, data: Any, name: str = "") -> DownloadStatus:
        data = data if isinstance(data, dict) else {}
        return cls(
            id=_text(data, "id"),
            name=_text(data, "name", name),
            state=_text(data, "state", "failed"),
            done_bytes=_int(data.get("done_bytes")) or 0,
            total_bytes=_int(data.get("total_bytes")),
            error=data.get("error") if isinstance(data.get("error"), str) else None,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        if not self.total_bytes:
            return 0.0
        return max(0.0, min(1.0, self.done_bytes / self.total_bytes))

    @property
    def text(self) -> str:
        """One line for the panel: "42%, 1.80 GB of 4.27 GB", "Queued", "Failed: ..."."""
        if self.state == "running":
            done = human_size(self.done_bytes)
            return f"{self.fraction:.0%}, {done} of {human_size(self.total_bytes)}"
        if self.state == "failed":
            return f"Failed: {self.error or 'no reason given'}"
        return {"queued": "Queued", "done": "Installed", "canceled": "Canceled"}.get(
            self.state, self.state
        )


@dataclass(frozen=True)
class Progress:
    status: DownloadStatus


@dataclass(frozen=True)
class Ended:
    """The download ended (done, failed or canceled); what the backend lists now."""

    status: DownloadStatus
    catalogue: tuple[CatalogueItem, ...] | None = None
    choices: ModelChoices | None = None
    lines: tuple[str, ...] = ()


Message = Progress | Ended


@dataclass
class DownloadRunner:
    """Follows the download of one catalogue entry on its own thread."""

    name: str
    connect: Callable[[], BackendClient]
    poll_s: float = POLL_S
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"download-{self.name}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            client = self.connect()
            status = self._follow(client)
        except (BackendError, BackendUnreachable, OSError) as exc:
            detail = exc.detail if isinstance(exc, BackendError) else str(exc)
            self.messages.put(Ended(DownloadStatus("", self.name, "failed", error=detail)))
            return
        self.messages.put(self._ended(client, status))

    def _follow(self, client: BackendClient) -> DownloadStatus:
        status = DownloadStatus.from_json(client.start_download(self.name), self.name)
        asked_to_cancel = False
        while not status.finished:
            self.messages.put(Progress(status))
            if self._cancel.wait(self.poll_s) and not asked_to_cancel:
                asked_to_cancel = True
                status = DownloadStatus.from_json(client.cancel_download(status.id), self.name)
                continue
            status = DownloadStatus.from_json(client.download(status.id), self.name)
        return status

    def _ended(self, client: BackendClient, status: DownloadStatus) -> Ended:
        """The final status, with the catalogue and model listing read again (best effort)."""
        try:
            lines, choices = check_models(client.connection)
            catalogue = fetch_catalogue(client)
        except (BackendError, BackendUnreachable, OSError):
            return Ended(status)
        return Ended(status, catalogue, choices, tuple(lines))


def missing_by_pipeline(items: tuple[CatalogueItem, ...]) -> dict[str, list[CatalogueItem]]:
    """The catalogue entries each pipeline still needs, by pipeline, in catalogue order."""
    out: dict[str, list[CatalogueItem]] = {}
    for item in items:
        for pipeline in item.needed_by:
            out.setdefault(pipeline, []).append(item)
    return out
