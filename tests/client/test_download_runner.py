"""The add-on's download runner (stdlib client, no bpy) against the real backend process, which
downloads from the stand-in hub: progress while it runs, cancel, the listing read again at the
end, and the failures a person has to read."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.downloads import (
    CatalogueItem,
    DownloadRunner,
    DownloadStatus,
    Ended,
    Progress,
    fetch_catalogue,
    human_size,
    missing_by_pipeline,
    parse_catalogue,
)
from client.http import BackendClient, BackendUnreachable, Connection
from tests.backend.hub import Fault, StandInHub
from tests.backend.server import Backend

MB = 1024 * 1024
DEADLINE_S = 60.0


def lora_entry(name: str, path: str) -> dict:
    return {"name": name, "title": "A LoRA", "kind": "lora", "repo": "test/lora",
            "files": [{"path": path}], "licence": "mit"}  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, tiny_models: Path) -> Iterator[tuple[StandInHub, Backend]]:
    """The stand-in hub with the tiny LoRA padded to 24 MB (its header says so: a valid file),
    and a backend whose catalogue offers it."""
    lora = (tiny_models / "lora" / "tiny-lora.safetensors").read_bytes()
    size = int.from_bytes(lora[:8], "little")
    header = json.loads(lora[8 : 8 + size])
    header["padding"] = {"dtype": "U8", "shape": [24 * MB], "data_offsets": []}
    end = max(
        v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and k != "padding"
    )
    header["padding"]["data_offsets"] = [end, end + 24 * MB]
    text = json.dumps(header)
    text += " " * (-len(text) % 8)
    padded = len(text).to_bytes(8, "little") + text.encode() + lora[8 + size :] + bytes(24 * MB)
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps([lora_entry("style-lora", "style.safetensors")]))
    with StandInHub() as hub:
        hub.add("test/lora", "style.safetensors", padded)
        b = Backend(
            data=tmp_path / "data",
            models=tmp_path / "models",
            env={"HF_ENDPOINT": hub.url},
            extra_args=["--catalogue", str(catalogue)],
        )
        try:
            yield hub, b.start()
        finally:
            b.stop()


def connect(b: Backend):
    return lambda: BackendClient(Connection(b.url, b.token))


def next_message(runner: DownloadRunner) -> Progress | Ended:
    try:
        return runner.messages.get(timeout=DEADLINE_S)
    except queue.Empty:
        raise TimeoutError(f"the runner for {runner.name} said nothing") from None


def until_ended(runner: DownloadRunner) -> tuple[list[DownloadStatus], Ended]:
    seen: list[DownloadStatus] = []
    while not isinstance(message := next_message(runner), Ended):
        seen.append(message.status)
    return seen, message


def test_the_runner_reports_progress_and_the_new_listing(setup) -> None:
    hub, b = setup
    hub.faults[("test/lora", "style.safetensors")] = Fault(hold_after=12 * MB)
    before = fetch_catalogue(BackendClient(Connection(b.url, b.token)))
    assert [(i.name, i.installed, i.needed_by) for i in before if i.name == "style-lora"] == [
        ("style-lora", False, ())  # no pipeline needs a LoRA
    ]
    runner = DownloadRunner("style-lora", connect(b), poll_s=0.05)
    runner.start()
    while not (isinstance(m := next_message(runner), Progress) and m.status.done_bytes > 0):
        assert not isinstance(m, Ended), m
    assert m.status.state == "running" and 0 < m.status.fraction < 1
    assert m.status.text.startswith(f"{m.status.fraction:.0%}, ")
    hub.release.set()
    _, ended = until_ended(runner)
    runner.join(DEADLINE_S)
    assert ended.status.state == "done" and ended.status.text == "Installed"
    assert ended.choices is not None and ended.choices.loras == ("lora/style-lora/style",)
    assert ended.catalogue is not None
    assert next(i for i in ended.catalogue if i.name == "style-lora").installed


def test_cancel_stops_the_download_on_the_backend(setup, tmp_path: Path) -> None:
    hub, b = setup
    hub.faults[("test/lora", "style.safetensors")] = Fault(hold_after=12 * MB)
    runner = DownloadRunner("style-lora", connect(b), poll_s=0.05)
    runner.start()
    while not (isinstance(m := next_message(runner), Progress) and m.status.done_bytes > 0):
        assert not isinstance(m, Ended), m
    runner.cancel()
    _, ended = until_ended(runner)
    assert ended.status.state == "canceled" and ended.status.text == "Canceled"
    assert not any((tmp_path / "models").rglob("*.safetensors"))


def test_failures_end_with_a_sentence(setup) -> None:
    _, b = setup
    runner = DownloadRunner("no-such-model", connect(b))
    runner.start()
    _, ended = until_ended(runner)
    assert ended.status.state == "failed"
    assert "no model called 'no-such-model'" in ended.status.text

    def unreachable() -> BackendClient:
        raise BackendUnreachable("no Framesmith backend answered at http://127.0.0.1:9")

    runner = DownloadRunner("style-lora", unreachable)
    runner.start()
    _, ended = until_ended(runner)
    assert ended.status.text == "Failed: no Framesmith backend answered at http://127.0.0.1:9"


def test_catalogue_items_are_read_defensively() -> None:
    items = parse_catalogue(
        {"models": [
            {"name": "sd15", "title": "SD 1.5", "kind": "checkpoint", "size": 4_270_000_000,
             "licence": "creativeml-openrail-m", "installed": False,
             "needed_by": ["inbetween", "stylize"]},
            {"name": "odd", "size": "huge", "installed": "yes", "needed_by": "stylize"},
            "not an entry",
            {"title": "no name"},
        ]}
    )  # fmt: skip
    assert [i.name for i in items] == ["sd15", "odd"]
    assert items[0].summary == "4.27 GB, licence creativeml-openrail-m"
    assert items[1] == CatalogueItem("odd", "odd", "", "licence unknown")
    assert missing_by_pipeline(items) == {"inbetween": [items[0]], "stylize": [items[0]]}
    assert parse_catalogue(None) == () and parse_catalogue({"models": 3}) == ()
    assert [human_size(n) for n in (None, 12, 44_600_000, 723_000_945)] == [
        "size unknown", "12 bytes", "45 MB", "723 MB"
    ]  # fmt: skip
