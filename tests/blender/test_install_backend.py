"""Install Backend, driven the way Blender's UI drives it: invoke() returns at once, the timer
(and the modal handler's ticks) move the progress bar through the steps, Esc cancels, a second
press continues where the first stopped and points Backend Python at the new environment.

The extension root is a stand-in whose requirements need no network (pip is in every new
environment) and whose doctor is a few lines, so the real steps run in seconds; the real
requirements are installed in tests/client/test_installer.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from tests.blender.invoking import ESC, TIMER, Invoker
from tests.blender.support import ADDON, tick_until
from tests.blender.test_ui import Layout

DOCTOR = """\
import time
from pathlib import Path
print("Framesmith backend stand-in", flush=True)
if Path("slow").exists():
    print("checking slowly", flush=True)
    time.sleep(120)
print("pipeline inbetween: available", flush=True)
"""


@pytest.fixture
def installing(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The operator module, installing from a stand-in extension root into a clean folder."""
    module = sys.modules[f"{ADDON}.operators.install_backend"]
    preferences = sys.modules[f"{ADDON}.preferences"]
    root = tmp_path / "extension"
    (root / "requirements").mkdir(parents=True)
    (root / "requirements" / "backend.txt").write_text("pip\n")
    (root / "backend").mkdir()
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(DOCTOR)
    monkeypatch.setattr(module, "EXTENSION_ROOT", root)
    # pip without this machine's configuration (its local wheel folders) and without retries
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    shutil.rmtree(preferences.backend_env_dir(), ignore_errors=True)
    prefs = bpy.context.preferences.addons[ADDON].preferences
    saved = {name: getattr(prefs, name) for name in
             ("python_path", "install_torch_version", "install_index_url", "install_message")}  # fmt: skip
    (tmp_path / "index").mkdir()
    prefs.install_torch_version = ""  # no torch step
    prefs.install_index_url = (tmp_path / "index").as_uri()  # a local index: no online access
    yield module
    module.stop()  # no install and no timer outlive the test (the interpreter hangs otherwise)
    for name, value in saved.items():
        setattr(prefs, name, value)
    shutil.rmtree(preferences.backend_env_dir(), ignore_errors=True)


@pytest.fixture
def invoker(addon: ModuleType) -> Iterator[Invoker]:
    made = Invoker()
    yield made
    made.close()


def prefs() -> Any:
    return bpy.context.preferences.addons[ADDON].preferences


@pytest.fixture
def seen(installing: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line the preferences showed, message by message (one tick may apply several)."""
    shown = [prefs().install_message]
    apply = installing.apply

    def recording(p: Any, message: Any) -> None:
        apply(p, message)
        shown.append(p.install_message)

    monkeypatch.setattr(installing, "apply", recording)
    return shown


def test_install_shows_progress_cancels_on_esc_and_continues(
    installing: ModuleType, invoker: Invoker, seen: list[str]
) -> None:
    root: Path = installing.EXTENSION_ROOT
    (root / "slow").write_text("")
    python_before = prefs().python_path
    install = invoker("install_backend", "FRAMESMITH_OT_install_backend")
    assert install.call() == {"RUNNING_MODAL"}
    assert install.seconds[-1] < 0.5  # invoke() started it and returned
    assert installing.running()

    assert prefs().install_message == "Starting the install"
    op = install.last
    tick_until(lambda: op.modal(bpy.context, TIMER), lambda: "checking" in seen[-1], seen)
    assert "Step 1/3, Creating the environment" in seen
    assert "Step 2/3, Installing the backend's packages: Already installed pip" in seen
    assert seen[-1] == "Step 3/3, Checking the backend: checking slowly"
    assert 2 / 3 <= prefs().install_progress < 1.0
    shown: list[str] = []
    prefs().draw_install(Layout(shown))
    progress = prefs().install_progress
    assert shown[:2] == [
        f"progress:{progress:.2f}:{progress:.0%} · Step 3/3, Checking the backend: checking slowly",
        "op:framesmith.install_backend_cancel",
    ]
    assert bpy.ops.framesmith.install_backend_cancel.poll()

    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    tick_until(installing.drain, lambda: not installing.running(), seen)  # the app timer
    assert seen[-1].startswith("Canceled: press Install Backend to continue")
    assert prefs().python_path == python_before
    assert not bpy.ops.framesmith.install_backend_cancel.poll()

    (root / "slow").unlink()
    assert install.call() == {"RUNNING_MODAL"}
    seen.clear()
    op = install.last
    end = tick_until(lambda: op.modal(bpy.context, TIMER), lambda: not installing.running(), seen)
    assert end == {"FINISHED"}
    assert "Step 1/3, Creating the environment: Already done" in seen
    assert "Step 2/3, Installing the backend's packages: Already done" in seen
    env = sys.modules[f"{ADDON}.preferences"].backend_env_dir()
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    assert prefs().python_path == str(python)
    assert prefs().install_progress == 1.0
    assert seen[-1] == f"Installed: Backend Python is {python}"
    shown.clear()
    prefs().draw_install(Layout(shown))
    assert shown[:2] == ["op:framesmith.install_backend", f"label:{seen[-1]}"]


def test_install_from_the_internet_needs_online_access(
    installing: ModuleType, invoker: Invoker
) -> None:
    prefs().install_index_url = ""  # PyPI; the bpy module runs with online access off
    assert not bpy.app.online_access
    install = invoker("install_backend", "FRAMESMITH_OT_install_backend")
    with pytest.raises(RuntimeError, match="online access is off"):  # an ERROR report
        install.call()
    assert not installing.running()
    assert prefs().install_message.startswith(
        "Blender's online access is off, so the packages cannot be downloaded from PyPI"
    )
