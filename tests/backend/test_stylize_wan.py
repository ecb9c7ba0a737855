"""Stylize engine wan_vace with the tiny Wan2.1-VACE: sizes, windows and the mask (no model),
params and model recognition, then whole jobs through the real service (a 24-frame shot from
depth in four windows, seeds, cancel, missing models, validation)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.jobs import InputError, JobSpec, Pass
from backend.models.catalogue import ModelKind
from backend.models.registry import ModelRegistry
from backend.pipelines.stylize import StylizePipeline
from backend.pipelines.stylize_params import StylizeParams, parse_params
from backend.pipelines.stylize_plan import plan_chunks
from backend.pipelines.wan_control import build_window, padded_length, run_size
from tests.backend.images import exr_bytes, png_bytes, png_pixels
from tests.backend.server import Backend, outputs, start_and_finish, wait_for, wait_until

W = H = 64
SHOT = 24
WINDOW, OVERLAP = 9, 2  # four windows over 24 frames
WAN = {
    "engine": "wan_vace",
    "prompt": "a watercolour ball",
    "steps": 2,
    "guidance": 3.0,
    "seed": 5,
    "vace": {"control": "depth", "window": WINDOW, "overlap": OVERLAP},
}


def shot_frame(t: int) -> dict[Pass, bytes]:
    """A ball rolling across a wall: depth, line art and beauty."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, r = 16.0 + 1.3 * t, 12.0
    d2 = (xx - cx) ** 2 + (yy - 32.0) ** 2
    inside = d2 < r * r
    bulge = np.sqrt(np.clip(r * r - d2, 0.0, None)) / r
    depth = np.where(inside, 4.0 - bulge, 1e10).astype(np.float32)
    line = (np.abs(np.sqrt(d2) - r) < 1.0).astype(np.uint8) * 255
    wall = 0.5 + 0.25 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    beauty = np.stack([np.where(inside, bulge, wall), wall, wall], 2)
    return {
        Pass.DEPTH: exr_bytes({"V": depth}),
        Pass.LINEART: png_bytes(np.repeat(line[:, :, None], 3, axis=2)),
        Pass.BEAUTY: png_bytes((beauty * 255).astype(np.uint8)),
        Pass.REFERENCE: png_bytes(np.full((24, 40, 3), (200, 60, 30), np.uint8)),
    }


@pytest.fixture(scope="module")
def shot() -> dict[int, dict[Pass, bytes]]:
    return {t: shot_frame(t) for t in range(SHOT)}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, wan_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("stylize-wan")
    b = Backend(data=root / "data", models=wan_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def create(c: httpx.Client, params: dict, frames: range = range(SHOT)) -> dict:
    body = {"kind": "stylize", "frames": list(frames), "width": W, "height": H, "params": params}
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload(c: httpx.Client, job: dict, shot: dict[int, dict[Pass, bytes]]) -> None:
    for p, frames in job["missing_inputs"].items():
        for f in frames:
            r = c.put(f"/v1/jobs/{job['id']}/inputs/{p}/{f}", content=shot[f][Pass(p)])
            assert r.status_code == 200, r.text


def run_job(c: httpx.Client, params: dict, shot, frames: range = range(SHOT)) -> dict:
    job = create(c, params, frames)
    upload(c, job, shot)
    return start_and_finish(c, job["id"])


# --- sizes, windows, the mask (no model) ------------------------------------------------------


def test_run_size_keeps_the_area_and_aspect_in_multiples_of_16() -> None:
    area = 832 * 480
    assert run_size(1920, 1080, area) == (848, 480)
    assert run_size(1080, 1920, area) == (480, 848)
    assert run_size(832, 480, area) == (832, 480)
    for w, h in ((1024, 1024), (2048, 858), (640, 480), (64, 64)):
        rw, rh = run_size(w, h, area)
        assert rw % 16 == 0 and rh % 16 == 0
        assert abs(rw * rh / area - 1.0) < 0.12, (w, h, rw, rh)
        assert abs((rw / rh) / (w / h) - 1.0) < 0.06, (w, h, rw, rh)
    assert run_size(W, H, 32 * 32) == (32, 32)  # the tiny model's working size
    assert [padded_length(n) for n in (1, 2, 5, 6, 9, 24, 81)] == [1, 5, 5, 9, 9, 25, 81]


@dataclass
class FakeContext:
    """The RunContext a window reads: job, passes and written outputs."""

    job: JobSpec
    passes: dict[tuple[Pass, int], np.ndarray] = field(default_factory=dict)

    def input(self, p: Pass, frame: int) -> np.ndarray:
        return self.passes[(p, frame)]


def test_a_window_holds_the_written_frames_and_pads_to_4k_plus_1() -> None:
    job = JobSpec("w" * 32, "stylize", W, H, tuple(range(12)), (), {})
    lines = {(Pass.LINEART, f): np.full((H, W, 3), 0.1 * (f % 5), np.float32) for f in range(12)}
    ctx = FakeContext(job, lines)
    written = {f: np.full((H, W, 3), 40 * f, np.uint8) for f in (4, 5)}
    window = build_window(ctx, "lineart", range(4, 12), written, (32, 16))  # type: ignore[arg-type]
    assert len(window.video) == 9 and window.produced == 8  # 8 frames padded to 4k+1
    assert window.mask == [0.0, 0.0] + [1.0] * 7
    assert all(v.shape == (16, 32, 3) for v in window.video)
    np.testing.assert_allclose(window.video[1], 200 / 255.0, atol=1e-6)  # written frame 5
    np.testing.assert_allclose(window.video[2], 0.1, atol=1e-6)  # frame 6's line art
    np.testing.assert_array_equal(window.video[8], window.video[7])  # padding repeats


def test_windows_reach_back_over_the_written_frames() -> None:
    chunks = plan_chunks(tuple(range(SHOT)), WINDOW, OVERLAP)
    assert [c.frames[0] for c in chunks] == [0, 9, 16, 23]
    assert all(len(c.context) == WINDOW for c in chunks)
    assert sum((c.frames for c in chunks), ()) == tuple(range(SHOT))


# --- params and models --------------------------------------------------------------------------


def test_params_choose_the_engine_and_animatediff_reads_back_unchanged() -> None:
    default = StylizeParams().model_dump(mode="json")
    assert "engine" not in default and "vace" not in default
    wan = parse_params(WAN)
    assert wan.engine == "wan_vace" and wan.vace_settings.control == "depth"
    assert parse_params({"engine": "wan_vace"}).vace_settings.window == 81
    for bad, words in (
        ({"engine": "sdxl"}, ["engine", "'animatediff' or 'wan_vace'"]),
        ({**WAN, "vace": {"control": "normal"}}, ["vace.control", "'luminance'"]),
        ({**WAN, "vace": {"window": 8}}, ["4k+1"]),
        ({**WAN, "vace": {"window": 9, "overlap": 9}}, ["overlap (9)", "window (9)"]),
        ({**WAN, "vace": {"colour": 1}}, ["vace.colour", "Extra inputs"]),
        ({"vace": {"control": "depth"}}, ['engine "wan_vace" only']),
        ({**WAN, "controlnets": [{"pass": "depth"}]}, ["controlnets belong to engine animatediff"]),
    ):
        with pytest.raises(InputError) as err:
            parse_params(bad)
        assert all(w in str(err.value) for w in words), str(err.value)


def test_required_inputs_follow_the_control() -> None:
    pipeline = StylizePipeline()
    for control, needed in (
        ("depth", {Pass.DEPTH}),
        ("lineart", {Pass.LINEART}),
        ("luminance", {Pass.BEAUTY}),
        ("none", set()),
    ):
        params = {**WAN, "vace": {"control": control}, "style_reference": control == "none"}
        job = JobSpec("j" * 32, "stylize", 50, 30, (3, 4), (), params)
        pipeline.check_job(job)  # any size: the model runs at its own
        want = needed | ({Pass.REFERENCE} if control == "none" else set())
        assert set(pipeline.required_inputs(job)) == want


def test_the_tiny_model_is_recognised_and_loads(wan_models: Path, tmp_path: Path) -> None:
    from backend.models.tiny_wan import make_tiny_wan_vace
    from backend.models.wan import load_wan_vace

    registry = ModelRegistry(wan_models).scan()
    [entry] = registry.entries
    assert (entry.name, entry.kind, entry.layout) == (
        "wan/tiny-wan2.1-vace",
        ModelKind.WAN_VACE,
        "diffusers",
    )
    assert registry.missing_for("stylize", mode="wan_vace") == []
    pipe = load_wan_vace(entry, registry=registry)
    assert not pipe.transformer.training and pipe.vae.dtype.is_floating_point
    again = make_tiny_wan_vace(tmp_path)
    for file in sorted(p for p in entry.path.rglob("*") if p.is_file()):
        assert file.read_bytes() == (again / file.relative_to(entry.path)).read_bytes(), file


def test_an_incomplete_folder_is_refused_naming_what_is_missing(
    wan_models: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(wan_models, root)
    shutil.rmtree(root / "wan/tiny-wan2.1-vace/transformer")
    registry = ModelRegistry(root).scan()
    assert registry.entries == ()
    [line] = registry.missing_for("stylize", mode="wan_vace")
    assert f"{root}/wan/" in line and "wan/tiny-wan2.1-vace/ was refused" in line
    assert "no transformer/" in line


# --- through the real service --------------------------------------------------------------------


def test_models_route_lists_the_video_model(backend: Backend) -> None:
    with backend.client() as c:
        body = c.get("/v1/models").raise_for_status().json()
    assert [e["name"] for e in body["installed"]["wan_vace"]] == ["wan/tiny-wan2.1-vace"]
    assert body["layout"]["wan_vace"] == "wan/"
    assert body["pipelines"]["stylize"]["modes"]["wan_vace"]["ready"] is True


def test_a_24_frame_shot_from_depth_in_windows_is_reproducible(backend: Backend, shot) -> None:
    with backend.client() as c:
        first = run_job(c, WAN, shot)
        frames = outputs(c, first)
        again = outputs(c, run_job(c, WAN, shot))
        other = outputs(c, run_job(c, {**WAN, "seed": 6}, shot))
    assert sorted(frames) == list(range(SHOT)) and first["progress"]["chunks"] == 4
    assert first["params"]["vace"]["run_size"] == [32, 32]  # the size the model ran at
    assert first["params"]["vace"]["model"] == "wan/tiny-wan2.1-vace"
    pictures = [png_pixels(frames[f]) for f in range(SHOT)]
    assert all(p.shape == (H, W, 3) for p in pictures)  # back at the shot's size
    assert len({p.tobytes() for p in pictures}) == SHOT  # every frame generated
    assert again == frames
    assert all(other[f] != frames[f] for f in range(SHOT))


def test_lineart_luminance_and_a_style_reference(backend: Backend, shot) -> None:
    with backend.client() as c:
        done = {}
        for control in ("lineart", "luminance"):
            params = {**WAN, "vace": {"control": control, "window": 5, "overlap": 1}}
            done[control] = outputs(c, run_job(c, params, shot, range(6)))
        styled = {
            **WAN,
            "vace": {"control": "none", "window": 5, "overlap": 1},
            "style_reference": True,
        }
        done["none"] = outputs(c, run_job(c, styled, shot, range(6)))
    assert all(sorted(v) == list(range(6)) for v in done.values())
    assert done["lineart"][0] != done["luminance"][0] != done["none"][0]


def test_cancel_stops_within_a_step(backend: Backend, shot) -> None:
    with backend.client() as c:
        job = create(c, {**WAN, "steps": 40}, range(9))
        upload(c, job, shot)
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        wait_until(
            c, job["id"], lambda j: j["progress"]["stage"] == "denoise" and j["progress"]["done"]
        )
        at_cancel = c.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status().json()
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
    assert final["state"] == "canceled"
    assert final["finished_frames"] == []
    assert final["progress"]["done"] <= at_cancel["progress"]["done"] + 1 < 40


def test_a_missing_model_is_a_400_naming_the_folder(backend: Backend, shot, make_backend) -> None:
    with backend.client() as c:
        job = create(c, {**WAN, "vace": {"model": "wan-14b"}}, range(2))
        upload(c, job, shot)
        r = c.post(f"/v1/jobs/{job['id']}/start")
    assert r.status_code == 400, r.text
    assert "wan-14b" in r.json()["detail"] and f"{backend.models}/wan/" in r.json()["detail"]
    empty = make_backend("empty").start()
    with empty.client() as c:
        job = create(c, WAN, range(2))
        upload(c, job, shot)
        r = c.post(f"/v1/jobs/{job['id']}/start")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "No Wan2.1-VACE model installed" in detail and f"{empty.models}/wan/" in detail


def test_bad_params_are_refused_with_sentences(backend: Backend) -> None:
    body = {"kind": "stylize", "frames": [0, 1], "width": W, "height": H}
    with backend.client() as c:
        for params, words in (
            ({"engine": "wan"}, ["engine", "wan_vace"]),
            ({**WAN, "vace": {"control": "normal"}}, ["vace.control"]),
            ({**WAN, "vace": {"conditioning_scale": -1}}, ["vace.conditioning_scale"]),
        ):
            r = c.post("/v1/jobs", json={**body, "params": params})
            assert 400 <= r.status_code < 500, r.text
            detail = r.json()["detail"]
            assert isinstance(detail, str) and all(w in detail for w in words), detail
