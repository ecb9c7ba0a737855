"""The launcher starts a real backend, and a second caller reuses it through the ready file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from client.http import BackendClient
from client.launcher import LaunchError, LaunchSpec, ensure_backend, find_running, launch, stop
from tests.backend.server import REPO


def test_launch_reuse_and_stop(tmp_path: Path) -> None:
    spec = LaunchSpec(
        python=Path(sys.executable),
        root=REPO,
        data_dir=tmp_path / "data",
        models_dir=tmp_path / "models",
        device="cpu",
    )
    first = ensure_backend(spec, timeout=60)
    try:
        assert first.started_here
        assert BackendClient(first.connection).health()["api"] == "v1"
        second = ensure_backend(spec, timeout=60)
        assert not second.started_here
        assert second.pid == first.pid and second.connection.url == first.connection.url
    finally:
        assert stop(spec.data_dir)

    os.waitpid(first.pid, 0)
    assert find_running(spec.data_dir) is None


def test_launch_with_a_missing_python_says_what_to_do(tmp_path: Path) -> None:
    spec = LaunchSpec(
        python=tmp_path / "nope" / "python", root=REPO, data_dir=tmp_path, models_dir=tmp_path
    )
    with pytest.raises(LaunchError, match="preferences"):
        launch(spec)


def test_a_backend_that_dies_at_start_is_reported(tmp_path: Path) -> None:
    spec = LaunchSpec(
        python=Path(sys.executable),
        root=REPO,
        data_dir=tmp_path / "d",
        models_dir=tmp_path / "m",
        extra_args=("--host", "0.0.0.0"),
    )
    with pytest.raises(LaunchError, match="token"):
        launch(spec, timeout=60)
