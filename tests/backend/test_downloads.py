"""Model downloads through the real backend over HTTP, with the real huggingface_hub client
against a stand-in hub on 127.0.0.1 (tests/backend/hub.py): resume after a dropped connection
and after a killed backend, checksums, cancel, refused paths, free space, and the tiny models
downloaded from the built-in catalogue's repos, then used by a stylize job."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.backend.hub import Fault, StandInHub, serve_tiny_models
from tests.backend.images import exr_bytes, png_bytes
from tests.backend.server import Backend, start_and_finish

MB = 1024 * 1024
BIG = 24 * MB  # over huggingface_hub's 10 MB write chunk, so a transfer stops part-way
CHUNK = 10 * MB  # what the client has written when it is stopped at 12 MB


def safetensors_bytes(size: int, seed: int = 0) -> bytes:
    """A valid safetensors file of one uint8 tensor (random bytes), `size` bytes of data."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    header += " " * (-len(header) % 8)
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return len(header).to_bytes(8, "little") + header.encode() + data


def entry(name: str, repo: str, *files: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "lora", "repo": repo, "licence": "mit", "files": list(files),
            **more}  # fmt: skip


@pytest.fixture
def hub() -> Iterator[StandInHub]:
    with StandInHub() as h:
        yield h


@pytest.fixture
def big(hub: StandInHub) -> bytes:
    data = safetensors_bytes(BIG)
    hub.add("test/big", "big.safetensors", data)
    hub.add("test/big", "config.json", b'{"rank": 4}')
    return data


@pytest.fixture
def served(hub: StandInHub, tmp_path: Path) -> Callable[..., Backend]:
    """A backend whose downloads go to the stand-in hub, with extra catalogue entries."""
    catalogue = [entry("big", "test/big", {"path": "big.safetensors"}, {"path": "config.json"})]

    def start(*extra: dict[str, Any], name: str = "data", env: dict | None = None) -> Backend:
        path = tmp_path / "catalogue.json"
        path.write_text(json.dumps(catalogue + list(extra)))
        b = Backend(
            data=tmp_path / name,
            models=tmp_path / "models",
            env={"HF_ENDPOINT": hub.url, **(env or {})},
            extra_args=["--catalogue", str(path)],
        )
        started.append(b)
        return b.start()

    started: list[Backend] = []
    yield start  # type: ignore[misc]
    for b in started:
        b.stop()


def download(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.post("/v1/downloads", json={"name": name})
    assert r.status_code in (200, 202), r.text
    return r.json()


def wait_download(
    c: httpx.Client, download_id: str, ok: Callable[[dict], bool], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll a download until `ok` holds (the add-on polls the same way), with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        d = c.get(f"/v1/downloads/{download_id}").raise_for_status().json()
        if ok(d):
            return d
        if time.monotonic() > deadline:
            raise TimeoutError(f"download {download_id} never got there: {d}")
        time.sleep(0.05)


def finished(c: httpx.Client, download_id: str) -> dict[str, Any]:
    return wait_download(c, download_id, lambda d: d["state"] in ("done", "failed", "canceled"))


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- resume -----------------------------------------------------------------------------------


def test_a_dropped_connection_resumes_and_the_file_verifies(
    hub: StandInHub, big: bytes, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.faults[("test/big", "big.safetensors")] = Fault(cut_after=12 * MB)
    with served().client() as c:
        d = finished(c, download(c, "big")["id"])
    assert d["state"] == "done", d
    assert d["done_bytes"] == d["total_bytes"] == len(big) + len(b'{"rank": 4}')
    got = tmp_path / "models" / "lora" / "big" / "big.safetensors"
    assert sha256(got.read_bytes()) == sha256(big)
    transfers = hub.requests("GET", f"/{sha256(big)}")
    assert [t.range for t in transfers] == [None, f"bytes={CHUNK}-"]  # resumed, not restarted
    assert sum(t.sent for t in transfers) < BIG + 3 * MB


def test_a_download_resumes_after_the_backend_was_killed(
    hub: StandInHub, big: bytes, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.faults[("test/big", "big.safetensors")] = Fault(hold_after=12 * MB)
    first = served()
    with first.client() as c:
        d = download(c, "big")
        wait_download(c, d["id"], lambda d: d["done_bytes"] >= CHUNK)
    assert hub.held.is_set()
    first.kill9()  # the download child sees its lifeline close and exits too
    partial = tmp_path / "data" / "downloads" / "staging" / "big" / "partial"
    assert [p.stat().st_size for p in partial.iterdir()] == [CHUNK]
    assert files_under(tmp_path / "models") == []

    with served().client() as c:  # the same data folder: the staged bytes are found
        d = finished(c, download(c, "big")["id"])
    assert d["state"] == "done", d
    got = tmp_path / "models" / "lora" / "big" / "big.safetensors"
    assert sha256(got.read_bytes()) == sha256(big)
    last = hub.requests("GET", f"/{sha256(big)}")[-1]
    assert last.range == f"bytes={CHUNK}-" and last.sent == len(big) - CHUNK
    assert not (tmp_path / "data" / "downloads" / "staging" / "big").exists()


def test_the_token_goes_to_the_hub_and_never_to_the_cdn(
    hub: StandInHub, big: bytes, served: Callable[..., Backend]
) -> None:
    token = "hf_" + "t" * 34
    hub.add("test/gated", "config.json", b"{}")
    gated = entry("gated", "test/gated", {"pattern": "*.json"})
    with served(gated, env={"HF_TOKEN": token}).client() as c:
        assert finished(c, download(c, "big")["id"])["state"] == "done"
        assert finished(c, download(c, "gated")["id"])["state"] == "done"
    to_hub = [s for s in hub.seen if s.server == "hub"]
    to_cdn = [s for s in hub.seen if s.server == "cdn"]
    assert {s.method for s in to_hub} == {"HEAD", "GET"} and to_cdn
    assert {s.auth for s in to_hub} == {f"Bearer {token}"}  # HF_TOKEN, as huggingface_hub reads it
    assert {s.auth for s in to_cdn} == {None}  # a signed address: the token stays with the hub
    assert any("/tree/" in s.path for s in to_hub)  # the pattern went through the listing


# ---- verification ---------------------------------------------------------------------------


def test_a_checksum_mismatch_fails_with_a_sentence_and_leaves_no_file(
    hub: StandInHub, served: Callable[..., Backend], tmp_path: Path
) -> None:
    data = safetensors_bytes(1000, seed=1)
    hub.add("test/small", "small.safetensors", data)
    hub.add("test/other", "other.safetensors", safetensors_bytes(1000, seed=2))
    hub.faults[("test/other", "other.safetensors")] = Fault(corrupt=True, times=0)
    wrong = {"path": "small.safetensors", "sha256": "0" * 64}
    b = served(entry("pinned", "test/small", wrong), entry("corrupt", "test/other",
                                                           {"path": "other.safetensors"}))  # fmt: skip
    with b.client() as c:
        pinned = finished(c, download(c, "pinned")["id"])
        corrupt = finished(c, download(c, "corrupt")["id"])
    assert pinned["state"] == "failed"
    assert "small.safetensors does not match its checksum" in pinned["error"]
    assert "the catalogue says " + "0" * 64 in pinned["error"]
    assert corrupt["state"] == "failed"
    assert "the hub's LFS ETag says" in corrupt["error"]
    assert files_under(tmp_path / "models") == []
    for name in ("pinned", "corrupt"):
        assert files_under(tmp_path / "data" / "downloads" / "staging" / name) == ["lock"]


def test_a_pickle_named_safetensors_is_refused(
    hub: StandInHub, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.add("test/pickle", "model.safetensors", b"\x80\x04\x95" + b"\x00" * 64)
    with served(entry("pickle", "test/pickle", {"path": "model.safetensors"})).client() as c:
        d = finished(c, download(c, "pickle")["id"])
    assert d["state"] == "failed" and "pickle" in d["error"], d
    assert files_under(tmp_path / "models") == []


# ---- cancel -----------------------------------------------------------------------------------


def test_cancel_mid_file_leaves_nothing(
    hub: StandInHub, big: bytes, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.faults[("test/big", "big.safetensors")] = Fault(hold_after=12 * MB)
    with served().client() as c:
        d = download(c, "big")
        running = wait_download(c, d["id"], lambda d: d["done_bytes"] >= CHUNK)
        assert running["state"] == "running"
        r = c.post(f"/v1/downloads/{d['id']}/cancel")
        assert r.status_code == 200, r.text
        d = finished(c, d["id"])
        assert d["state"] == "canceled" and d["error"] is None
        # stopped where it was: the held transfer never finished, and none took over from it
        assert hub.requests("GET", f"/{sha256(big)}") == []
        listed = c.get("/v1/catalogue").json()["models"]
    assert not next(m for m in listed if m["name"] == "big")["installed"]
    assert files_under(tmp_path / "models") == []
    assert not (tmp_path / "data" / "downloads" / "staging" / "big").exists()


# ---- refused requests and catalogues ---------------------------------------------------------


def test_unknown_names_and_ids_are_404(served: Callable[..., Backend]) -> None:
    with served().client() as c:
        r = c.post("/v1/downloads", json={"name": "no-such-model"})
        assert r.status_code == 404
        assert "no model called 'no-such-model' in the catalogue" in r.json()["detail"]
        assert c.get("/v1/downloads/0123456789abcdef").status_code == 404
        assert c.post("/v1/downloads/0123456789abcdef/cancel").status_code == 404
        assert c.post("/v1/downloads", json={"name": "big", "x": 1}).status_code == 422
    with httpx.Client(base_url=c.base_url) as anonymous:
        assert anonymous.get("/v1/catalogue").status_code == 401
        assert anonymous.post("/v1/downloads", json={"name": "big"}).status_code == 401


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"files": [{"path": "../../escape.safetensors"}]}, "contains '..'"),
        ({"folder": "lora/../../outside"}, "contains '..'"),
        ({"folder": "/tmp/elsewhere"}, "is an absolute path"),
        ({"files": [{"path": "weights.bin"}]}, "downloads no pickles or code"),
    ],
)
def test_a_catalogue_path_leaving_the_models_folder_is_refused(
    served: Callable[..., Backend], bad: dict, said: str
) -> None:
    evil = entry("evil", "test/evil", {"path": "x.safetensors"}) | bad
    with pytest.raises(RuntimeError) as exc:
        served(evil)
    assert "backend exited with 2" in str(exc.value)
    assert "catalogue entry 'evil'" in str(exc.value) and said in str(exc.value)


def test_a_hub_listing_that_leaves_the_folder_is_refused(
    hub: StandInHub, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.add("test/listing", "ok.safetensors", safetensors_bytes(100))
    hub.extra_listing["test/listing"] = [
        {"type": "file", "oid": "0" * 40, "size": 100, "path": "../escape.safetensors"}
    ]
    with served(entry("listing", "test/listing", {"pattern": "*.safetensors"})).client() as c:
        d = finished(c, download(c, "listing")["id"])
    assert d["state"] == "failed" and "contains '..'" in d["error"], d
    assert files_under(tmp_path / "models") == []
    assert not (tmp_path / "escape.safetensors").exists()


def test_too_little_free_space_is_refused_before_the_first_byte(
    hub: StandInHub, big: bytes, served: Callable[..., Backend], tmp_path: Path
) -> None:
    hub.faults[("test/big", "big.safetensors")] = Fault(claimed_size=10**18, times=0)
    with served().client() as c:
        d = finished(c, download(c, "big")["id"])
    assert d["state"] == "failed" and "not enough free disk space for big" in d["error"], d
    assert hub.requests("GET", f"/{sha256(big)}") == []
    assert files_under(tmp_path / "models") == []


# ---- the tiny models from the built-in catalogue, then a job ---------------------------------


def stylize_inputs(frames: int, size: int) -> dict[int, dict[str, bytes]]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = {}
    for t in range(frames):
        inside = (xx - 20 - 3 * t) ** 2 + (yy - 32) ** 2 < 144
        beauty = np.stack([np.where(inside, 230, 60), np.full_like(xx, 120), xx * 3], 2)
        depth = np.where(inside, 3.0, 1e10).astype(np.float32)
        out[t] = {"beauty": png_bytes(beauty.astype(np.uint8)), "depth": exr_bytes({"V": depth})}
    return out


def test_tiny_models_download_from_the_catalogue_and_a_stylize_runs(
    hub: StandInHub, tiny_models: Path, tmp_path: Path
) -> None:
    serve_tiny_models(hub, tiny_models)
    b = Backend(data=tmp_path / "data", models=tmp_path / "models", env={"HF_ENDPOINT": hub.url})
    try:
        b.start()
        with b.client() as c:
            before = {m["name"]: m for m in c.get("/v1/catalogue").json()["models"]}
            assert before["sd15"]["needed_by"] == ["inbetween", "stylize"]
            assert before["sd15"]["licence"] == "creativeml-openrail-m"
            assert not any(m["installed"] for m in before.values())
            assert c.get("/v1/models").json()["pipelines"]["stylize"]["ready"] is False
            for name in ("sd15", "animatediff-v1-5-3", "controlnet-depth"):
                d = finished(c, download(c, name)["id"])
                assert d["state"] == "done", d
            again = download(c, "sd15")  # installed: answered done at once
            assert again["state"] == "done"
            after = {m["name"]: m for m in c.get("/v1/catalogue").json()["models"]}
            assert after["sd15"]["installed"] and after["sd15"]["needed_by"] == []
            listing = c.get("/v1/models").json()  # the registry rescanned after each download
            assert listing["pipelines"]["stylize"]["ready"] is True
            assert listing["pipelines"]["stylize"]["controlnets"]["depth"] == [
                "controlnet/controlnet-depth"
            ]
            job = run_stylize(c)
        assert job["state"] == "done"
    finally:
        b.stop()
    models = files_under(tmp_path / "models")
    assert "checkpoints/sd15/v1-5-pruned-emaonly.safetensors" in models
    assert "checkpoints/sd15/tokenizer/vocab.json" in models
    assert "controlnet/controlnet-depth/framesmith.json" in models  # its type, from the catalogue
    assert not any(m.endswith(".bin") or m.endswith("README.md") for m in models)


def run_stylize(c: httpx.Client, frames: int = 2, size: int = 64) -> dict[str, Any]:
    params = {
        "prompt": "a watercolour ball",
        "steps": 2,
        "seed": 3,
        "strength": 0.8,
        "temporal_fusion": False,
        "controlnets": [{"pass": "depth"}],
    }
    body = {
        "kind": "stylize",
        "frames": list(range(frames)),
        "width": size,
        "height": size,
        "params": params,
    }
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    inputs = stylize_inputs(frames, size)
    for pass_name, wanted in job["missing_inputs"].items():
        for f in wanted:
            r = c.put(f"/v1/jobs/{job['id']}/inputs/{pass_name}/{f}", content=inputs[f][pass_name])
            assert r.status_code == 200, r.text
    return start_and_finish(c, job["id"])


def test_extra_model_folders_are_scanned_and_left_alone(tiny_models: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_models.rglob("*")}
    b = Backend(
        data=tmp_path / "data",
        models=tmp_path / "models",
        extra_args=["--extra-models", str(tiny_models)],
    )
    try:
        b.start()
        with b.client() as c:
            listing = c.get("/v1/models").json()
            assert listing["extra"] == [str(tiny_models.resolve())]
            names = [m["name"] for m in listing["installed"]["checkpoint"]]
            assert "checkpoints/tiny-sd15" in names
            assert listing["pipelines"]["stylize"]["ready"] is True
            job = run_stylize(c)  # loads from the extra folder: its load checks accept it
        assert job["state"] == "done"
    finally:
        b.stop()
    assert files_under(tmp_path / "models") == []
    assert {p: p.stat().st_mtime_ns for p in tiny_models.rglob("*")} == before
