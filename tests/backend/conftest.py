"""Shared backend fixtures. The offline flags go in first, before anything imports the hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny model set, made once per session. Treat as read-only:
    copy it (shutil.copytree) before changing anything."""
    from backend.models.tiny import make_tiny_models  # imports diffusers: only when needed

    root = tmp_path_factory.mktemp("tiny-models")
    make_tiny_models(root)
    return root
