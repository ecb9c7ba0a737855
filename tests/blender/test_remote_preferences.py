"""The remote backend's TLS preferences reach the client: the pasted fingerprint is the one the
connection pins, and without the red "Allow Unencrypted" tick the token is never sent over plain
HTTP to another machine (decided from the URL: the `.invalid` name never resolves)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import bpy
import pytest

from tests.blender.support import ADDON

FINGERPRINT = ":".join(["AB"] * 32)


@pytest.fixture
def remote(prefs: Any) -> Iterator[Any]:
    kept = (prefs.url, prefs.token, prefs.fingerprint, prefs.allow_unencrypted)
    prefs.backend_mode = "REMOTE"
    prefs.token = "a-token-that-must-not-leak"
    yield prefs
    prefs.url, prefs.token, prefs.fingerprint, prefs.allow_unencrypted = kept


def connect(prefs: Any) -> Any:
    """The connection the add-on's own client modules make from these preferences."""
    assert prefs == bpy.context.preferences.addons[ADDON].preferences
    config = sys.modules[f"{ADDON}.preferences"].backend_config(prefs)
    return sys.modules[f"{ADDON}.client.backend"].connect(config, start=False)


def test_the_pasted_fingerprint_is_the_one_the_connection_pins(remote: Any) -> None:
    remote.url = "https://gpu-box.invalid:8765"
    remote.fingerprint = f"  {FINGERPRINT.lower()} "
    connection = connect(remote)
    assert connection.fingerprint == FINGERPRINT.lower()
    assert connection.allow_unencrypted is False


def test_plain_http_to_another_machine_needs_the_unsafe_tick(remote: Any) -> None:
    remote.url = "http://gpu-box.invalid:8765"
    remote.fingerprint = ""
    remote.allow_unencrypted = False
    http = sys.modules[f"{ADDON}.client.http"]
    client = http.BackendClient(connect(remote))
    with pytest.raises(http.UnsafeConnection, match="Allow Unencrypted"):
        client.health()

    remote.allow_unencrypted = True
    connection = connect(remote)
    assert connection.allow_unencrypted is True
