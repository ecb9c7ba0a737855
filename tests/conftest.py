"""Fixtures shared by every test folder. The offline flags go in first, before anything imports
the hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

if TYPE_CHECKING:
    # Imported inside the fixtures: it needs httpx, and the bpy test environment may lack it.
    from tests.backend.server import Backend


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator:
    """Factory for real backend processes; every one started is stopped at teardown."""
    from tests.backend.server import Backend

    started: list[Backend] = []

    def make(name: str = "backend", **kw) -> Backend:
        data = tmp_path / name
        models = kw.pop("models", tmp_path / "models")
        models.mkdir(parents=True, exist_ok=True)
        b = Backend(data=data, models=models, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One backend for the many tests that only need a running server."""
    from tests.backend.server import Backend

    root = tmp_path_factory.mktemp("shared")
    (root / "models").mkdir()
    b = Backend(data=root / "data", models=root / "models").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny model set, made once per session. Treat as read-only:
    copy it (shutil.copytree) before changing anything."""
    from backend.models.tiny import make_tiny_models  # imports diffusers: only when needed

    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def wan_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny Wan2.1-VACE, made once per session. Read-only, as
    tiny_models."""
    from backend.models.tiny_wan import make_tiny_wan_vace  # imports diffusers: only when needed

    root = tmp_path_factory.mktemp("wan-models")
    make_tiny_wan_vace(root)
    return root
