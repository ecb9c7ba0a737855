"""The whole set-up by buttons, for real: a Blender with only the extension, no Backend Python.

Install Backend (pressed as the preferences press it, progress by the modal handler's ticks)
installs torch pinned as the Makefile pins it and the real requirements/backend.txt into a fresh
environment, and points Backend Python at it; the Backend panel's Start and Check start the
backend from that environment, with HF_ENDPOINT on the stand-in hub; the Download buttons fetch
the tiny models; In-between and Stylize each finish a take that lands as a strip.

The install takes minutes and reaches the package index as test_installer.py's real install does
(pip's own configuration, torch from the index), so it runs once per `make test`: on bpy 4.5.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from client.installer import LOG_FILE, env_python
from client.launcher import read_ready
from tests.blender import test_downloads as downloads_tests
from tests.blender import test_install_backend as install_tests
from tests.blender.invoking import TIMER, Invoker
from tests.blender.support import ADDON, REPO, tick_until
from tests.blender.test_downloads import draw_backend_panel
from tests.blender.test_inbetween import REQUEST_KEY, framesmith_strips
from tests.blender.test_ui import Layout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bpy.app.version >= (5, 0),
        reason="the real install runs once per `make test`, on bpy 4.5; bpy 5.3 runs the same"
        " operator against a stand-in root in test_install_backend.py",
    ),
]

hub = downloads_tests.hub  # the stand-in hub serving the tiny models under the catalogue's repos
fresh = downloads_tests.fresh  # HF_ENDPOINT on that hub, empty models and data folders
invoker = install_tests.invoker  # operators through their invoke()/modal() path

# What the takes below use: in-between by diffusion (checkpoint, motion adapter, SparseCtrl),
# stylize with the depth ControlNet. Pressed by name: the panel offers other engines' models too.
USED = ("sd15", "animatediff-v1-5-3", "sparsectrl-rgb", "controlnet-depth")
INSTALL_DEADLINE_S = 900.0  # as test_installer.py's real install (about 2 minutes here)
INSTALL_SETTINGS = (
    "python_path",
    "install_torch_build",
    "install_torch_version",
    "install_index_url",
    "install_torch_index_url",
    "install_message",
)


def makefile_torch_version() -> str:
    found = re.search(r"^TORCH_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert found, "no TORCH_VERSION in the Makefile"
    return found.group(1)


@pytest.fixture
def backend_env(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Install Backend's target (the extension's user folder) moved into tmp_path. Removed at the
    end, once `fresh` has stopped the backend running from it; its install log stays."""
    env = tmp_path / "backend-env"
    monkeypatch.setattr(sys.modules[f"{ADDON}.preferences"], "backend_env_dir", lambda: env)
    yield env
    sys.modules[f"{ADDON}.operators.install_backend"].stop()  # no install outlives the test
    if (env / LOG_FILE).is_file():
        shutil.copy2(env / LOG_FILE, tmp_path / LOG_FILE)
    shutil.rmtree(env, ignore_errors=True)  # a gigabyte or more: not kept with pytest's tmp


@pytest.fixture
def bare(backend_env: Path, fresh: Any) -> Iterator[Any]:
    """The preferences of a Blender that has only the extension: no Backend Python, the install
    settings at their defaults but for the torch build, which is the package index's as in
    test_installer.py's real install; online access on, as the install from PyPI asks.
    (backend_env comes first: set up before `fresh`, so removed after `fresh` stops the backend.)"""
    system = bpy.context.preferences.system
    saved = {name: getattr(fresh, name) for name in INSTALL_SETTINGS}
    online = system.use_online_access
    for name in INSTALL_SETTINGS:
        fresh.property_unset(name)
    fresh.install_torch_build = "default"
    system.use_online_access = True
    yield fresh
    system.use_online_access = online
    for name, value in saved.items():
        setattr(fresh, name, value)


def test_a_bare_blender_installs_downloads_and_runs_both_pipelines_by_buttons(
    shot: Any,
    bare: Any,
    backend_env: Path,
    invoker: Invoker,
    session_state: ModuleType,
    listing_file: Path,
) -> None:
    installing = sys.modules[f"{ADDON}.operators.install_backend"]
    assert bare.python_path == "" and bpy.app.online_access
    assert bare.install_torch_version == makefile_torch_version()

    # 1. Preferences: Install Backend.
    shown: list[str] = []
    bare.draw_install(Layout(shown))
    assert shown[0] == "op:framesmith.install_backend"
    install = invoker("install_backend", "FRAMESMITH_OT_install_backend")
    started = time.monotonic()
    assert install.call() == {"RUNNING_MODAL"}
    op = install.last
    seen = [bare.install_message]  # the lines the preferences showed, read at each tick

    def ended() -> bool:
        if bare.install_message != seen[-1]:
            seen.append(bare.install_message)
        return not installing.running()

    end = tick_until(lambda: op.modal(bpy.context, TIMER), ended, seen, timeout=INSTALL_DEADLINE_S)
    print(f"Install Backend: {time.monotonic() - started:.0f} s")
    assert end == {"FINISHED"}, bare.install_message
    python = env_python(backend_env)
    assert bare.python_path == str(python)  # the operator pointed Backend Python at it
    assert bare.install_message == f"Installed: Backend Python is {python}"
    assert bare.install_progress == 1.0 and len(seen) > 3
    log = (backend_env / LOG_FILE).read_text()
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("== step")] == [
        f"== step {i}/4" for i in range(1, 5)
    ]  # environment, torch, requirements/backend.txt, doctor: each once
    torch = f"torch-{makefile_torch_version()}"
    assert list(backend_env.glob(f"lib/python*/site-packages/{torch}*.dist-info")), log[-2000:]

    # 2. Backend panel: Start, then Check; the backend runs from the new environment.
    shown, _ = draw_backend_panel()
    assert {"op:framesmith.backend_start", "op:framesmith.backend_check"} <= set(shown)
    assert bpy.ops.framesmith.backend_start() == {"FINISHED"}
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    ready = read_ready(Path(bare.data_dir))
    assert ready is not None, "no backend serves the data folder"
    argv = Path(f"/proc/{ready['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[0].decode() == str(python), argv  # not the repository's .venv

    # 3. Backend panel: the Download buttons of the models the two takes use.
    shown, buttons = draw_backend_panel()
    assert "label:Stylize needs one of these:" in shown
    assert "label:In-between needs one of these:" in shown
    catalogue = {m.name: m for m in session_state.downloads().catalogue}
    assert all(catalogue[name].needed_by for name in USED if name != "controlnet-depth")
    assert {("framesmith.download_model", name) for name in USED} <= set(buttons)
    for name in USED:
        assert bpy.ops.framesmith.download_model(name=name) == {"FINISHED"}, name
    shown, buttons = draw_backend_panel()
    for name in USED:  # ticked, no button any more
        assert f"label:{catalogue[name].title}" in shown, name
        assert ("framesmith.download_model", name) not in buttons, name
    choices = session_state.model_choices()  # the menus offer them, no Check needed
    assert "checkpoints/sd15/v1-5-pruned-emaonly" in choices.checkpoints

    # 4. In-between (diffusion: the downloaded motion model and SparseCtrl), then Stylize.
    props = shot.framesmith
    props.inbetween_method = "DIFFUSION"
    props.prompt, props.steps, props.seed, props.key_strength = "a glowing cube", 1, 3, 0.5
    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    props.steps, props.strength, props.temporal_fusion = 2, 0.8, False
    props.controlnet_depth.enabled = True
    props.controlnet_normal.enabled = props.controlnet_lineart.enabled = False
    shot.frame_end = 4
    assert bpy.ops.framesmith.stylize() == {"FINISHED"}
    assert [(j.kind, j.state) for j in props.jobs] == [("INBETWEEN", "DONE"), ("STYLIZE", "DONE")]
    strips = {json.loads(s[REQUEST_KEY])["kind"]: s for s in framesmith_strips(shot)}
    assert sorted(strips) == ["inbetween", "stylize"]
    for kind, strip in strips.items():
        folder = Path(bpy.path.abspath(strip.directory))
        assert all((folder / e.filename).is_file() for e in strip.elements), kind
    print(f"set-up by buttons, install included: {time.monotonic() - started:.0f} s")
