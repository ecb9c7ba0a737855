"""Models by buttons alone: a fresh models folder, the backend started from the add-on and
pointed (HF_ENDPOINT) at the stand-in hub serving the tiny models under the built-in catalogue's
repos. The Backend panel lists what each pipeline needs with a Download button (size and
licence shown first); pressing them fills the models folder, and an in-between and a stylize
then finish. The interactive path shows progress and cancels."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from tests.backend.hub import Fault, StandInHub, serve_tiny_models
from tests.blender.support import ADDON, BACKEND_PYTHON, REPO
from tests.blender.test_ui import Layout

DEADLINE_S = 120.0


class Panel(Layout):
    """The UI stand-in, also keeping the properties each button was given."""

    def __init__(self, shown: list[str], buttons: list[tuple[str, Any]]) -> None:
        super().__init__(shown)
        self.buttons = buttons

    def _child(self, *_args: object, **_kw: object) -> Panel:
        return Panel(self.shown, self.buttons)

    row = column = box = split = _child

    def operator(self, idname: str, **kw: object) -> Any:
        props = super().operator(idname, **kw)
        self.buttons.append((idname, props))
        return props


def draw_backend_panel() -> tuple[list[str], list[tuple[str, str]]]:
    """What the Backend panel shows now, and its download buttons as (operator, model)."""
    draw = sys.modules[f"{ADDON}.panels.draw"]
    shown: list[str] = []
    buttons: list[tuple[str, Any]] = []
    draw.backend(Panel(shown, buttons), bpy.context)
    named = [(op, getattr(props, "name", "")) for op, props in buttons if "download" in op]
    return shown, named


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandInHub]:
    if not BACKEND_PYTHON.is_file():
        pytest.skip(f"no backend environment at {BACKEND_PYTHON} (run `make setup`)")
    tiny = tmp_path_factory.mktemp("tiny-for-hub")
    subprocess.run(
        [str(BACKEND_PYTHON), "-m", "backend", "make-tiny-models", str(tiny)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with StandInHub() as h:
        serve_tiny_models(h, tiny)
        yield h


@pytest.fixture
def fresh(
    prefs: Any, hub: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Preferences pointing at an empty models folder and a data folder of their own; the
    backend the add-on starts inherits HF_ENDPOINT from Blender's environment."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    prefs.data_dir = str(tmp_path / "data")
    prefs.models_dir = str(tmp_path / "models")
    state = sys.modules[f"{ADDON}.state"]
    yield prefs
    assert bpy.ops.framesmith.backend_stop() == {"FINISHED"}
    state.downloads().catalogue = ()
    state.downloads().status.clear()


def test_buttons_alone_download_the_models_and_run_both_pipelines(
    shot: Any, fresh: Any, session_state: ModuleType, listing_file: Path, tmp_path: Path
) -> None:
    assert bpy.ops.framesmith.backend_start() == {"FINISHED"}
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    shown, buttons = draw_backend_panel()
    assert "label:Stylize needs one of these:" in shown
    assert "label:In-between needs one of these:" in shown
    assert "label:4.27 GB, licence creativeml-openrail-m" in shown  # before it starts
    needed = {m.name for m in session_state.downloads().catalogue if m.needed_by}
    assert needed == {"sd15", "animatediff-v1-5-3", "sparsectrl-rgb"}
    assert {name for _, name in buttons} >= needed | {"controlnet-depth", "ip-adapter-sd15"}

    for name in [*sorted(needed), "controlnet-depth"]:  # the buttons the panel shows
        assert bpy.ops.framesmith.download_model(name=name) == {"FINISHED"}
    models = Path(fresh.models_dir)
    assert (models / "checkpoints/sd15/v1-5-pruned-emaonly.safetensors").is_file()
    shown, buttons = draw_backend_panel()
    assert not any("needs one of these" in s for s in shown)
    assert "label:Stable Diffusion 1.5 (v1-5-pruned-emaonly)" in shown  # ticked: installed
    choices = session_state.model_choices()  # the menus know the new models, no Check needed
    assert choices.checkpoints == ("checkpoints/sd15/v1-5-pruned-emaonly",)
    assert choices.sparsectrls == ("sparsectrl/sparsectrl-rgb",)

    props = shot.framesmith
    props.inbetween_method = "DIFFUSION"
    props.prompt, props.steps, props.seed, props.key_strength = "a glowing cube", 1, 3, 0.5
    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    props.steps, props.strength = 2, 0.8
    props.controlnet_depth.enabled = True
    props.controlnet_normal.enabled = props.controlnet_lineart.enabled = False
    props.temporal_fusion = False
    shot.frame_end = 4
    assert bpy.ops.framesmith.stylize() == {"FINISHED"}
    assert [(j.kind, j.state) for j in props.jobs] == [("INBETWEEN", "DONE"), ("STYLIZE", "DONE")]


def drain_until(downloads: ModuleType, name: str, ok, what: str) -> Any:
    """Run the add-on's timer function (timers do not fire in the bpy module) until `ok`."""
    state = sys.modules[f"{ADDON}.state"]
    deadline = time.monotonic() + DEADLINE_S
    while True:
        downloads.drain()
        status = state.downloads().status.get(name)
        if ok(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: never {what}: {status}")
        time.sleep(0.05)  # the timer's own interval is longer


def test_interactive_download_shows_progress_and_cancels(
    fresh: Any, hub: StandInHub, session_state: ModuleType, tmp_path: Path
) -> None:
    downloads = sys.modules[f"{ADDON}.operators.downloads"]
    path = ("h94/IP-Adapter", "models/image_encoder/model.safetensors")
    size = len(hub.repos[path[0]][path[1]].data)
    hub.faults[path] = Fault(hold_after=size // 2)  # stalls half-way until released
    hub.release.clear()
    assert bpy.ops.framesmith.backend_start() == {"FINISHED"}
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}

    result = bpy.ops.framesmith.download_model(
        "INVOKE_DEFAULT", name="ip-adapter-sd15", wait="RETURN"
    )
    assert result == {"FINISHED"}  # returned at once: the runner follows it
    status = drain_until(downloads, "ip-adapter-sd15",
                         lambda s: s is not None and s.state == "running" and s.done_bytes > 0,
                         "running")  # fmt: skip
    shown, buttons = draw_backend_panel()
    (bar,) = [s for s in shown if s.startswith("progress:")]
    assert bar.startswith(f"progress:{status.fraction:.2f}:IP-Adapter for SD1.5")
    assert ("framesmith.download_cancel", "ip-adapter-sd15") in buttons

    assert bpy.ops.framesmith.download_cancel(name="ip-adapter-sd15") == {"FINISHED"}
    status = drain_until(downloads, "ip-adapter-sd15",
                         lambda s: s is not None and s.finished, "finished")  # fmt: skip
    hub.release.set()
    assert status.state == "canceled"
    assert not session_state.downloads().running("ip-adapter-sd15")
    assert "label:Canceled" in draw_backend_panel()[0]
    assert not any(Path(fresh.models_dir).rglob("*.safetensors"))
    assert os.environ["HF_ENDPOINT"] == hub.url
