"""Promise 4: no access without the token.

Every route in the app's own route table (read from backend.api.create_app, so a route added
later is covered without touching this test) answers 401 to a request without the token, with a
wrong one, or with the right one presented the wrong way; the same requests with the token get
through. A non-loopback bind without a token refuses to start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from backend.api.app import create_app
from backend.api.services import Services
from backend.serve_options import TOKEN_ENV
from backend.store import Store
from backend.worker import Worker
from tests.backend.server import REPO, Backend
from tests.promises.support import create_inbetween, square_keys

PARAM = re.compile(r"\{([^}]+)\}")


def route_table(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path template) for every route the app serves."""
    store = Store(tmp_path / "route-table")
    try:
        services = Services(store=store, worker=Worker(store, "cpu", dict), models_dir=tmp_path)
        app = create_app(services)
        table = [
            (method, route.path)
            for route in app.routes
            if isinstance(route, Route)
            for method in sorted(route.methods or ())
        ]
        spec_paths = set(app.openapi()["paths"])
    finally:
        store.close()
    assert spec_paths <= {path for _, path in table}
    return table


def wrong_credentials(token: str) -> dict[str, dict[str, str]]:
    return {
        "none": {},
        "wrong token": {"Authorization": "Bearer " + "x" * len(token)},
        "empty bearer": {"Authorization": "Bearer"},
        "token one short": {"Authorization": "Bearer " + token[:-1]},
        "token with extra": {"Authorization": "Bearer " + token + "x"},
        "basic scheme": {"Authorization": "Basic " + token},
        "no scheme": {"Authorization": token},
        "other header": {"X-Token": token},
        "cookie": {"Cookie": f"token={token}"},
    }


def test_every_route_answers_401_without_the_token(make_backend, tmp_path: Path) -> None:
    table = route_table(tmp_path)
    assert len(table) >= 10, table
    b: Backend = make_backend().start()
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 2: 12.0}), range(0, 3))
    values = {"job_id": job["id"], "pass_name": "keyframe", "frame": "0", "download_id": "0" * 16}
    concrete = [(m, PARAM.sub(lambda x: values[x.group(1)], path)) for m, path in table]
    concrete += [("GET", "/"), ("GET", "/v1/no-such-route"), ("POST", "/v1/jobs?token=x")]

    with httpx.Client(base_url=b.url, timeout=30.0) as anon:
        for method, path in concrete:
            for label, headers in wrong_credentials(b.token).items():
                r = anon.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, label, r.status_code, r.text)
                assert r.headers.get("www-authenticate") == "Bearer"
                if method != "HEAD":
                    assert "token" in r.json()["detail"]
            r = anon.request(method, path, params={"token": b.token})
            assert r.status_code == 401, "the token is accepted in the header only"

    with b.client() as c:
        # The refused requests (DELETE, start, cancel, PUT) changed nothing ...
        after = c.get(f"/v1/jobs/{job['id']}").json()
        assert after["state"] == "awaiting_inputs" and after["missing_inputs"] == {}
        # ... and the same routes let the token through.
        for method, path in concrete[: len(table)]:
            if method in ("DELETE", "PUT") or path.endswith(("/start", "/cancel")):
                continue
            r = c.request(method, path)
            assert r.status_code != 401, (method, path)
        r = c.get("/v1/health", headers={"Authorization": f"bearer {b.token}"})
        assert r.status_code == 200, "the scheme is case-insensitive (RFC 7235)"


def serve(tmp_path: Path, *args: str, token_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token_env is not None:
        env[TOKEN_ENV] = token_env
    return subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--data", str(tmp_path / "data"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_non_loopback_bind_without_a_token_refuses_to_start(tmp_path: Path, host: str) -> None:
    r = serve(tmp_path, "--host", host, "--port", "0")
    assert r.returncode == 2, r.stderr
    assert "without a token" in r.stderr and TOKEN_ENV in r.stderr
    assert not (tmp_path / "data" / "backend.json").exists()


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    r = serve(tmp_path, "--host", "0.0.0.0", token_env="short")
    assert r.returncode == 2 and "at least 16 characters" in r.stderr
