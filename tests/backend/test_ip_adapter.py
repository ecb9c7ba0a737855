"""Style reference image through an IP-Adapter: the tiny adapter and image encoder are recognised
and load offline; through the real service a reference changes the frames, the same reference
and seed repeat them, another reference changes them, in the three modes; missing models and
misplaced uploads are refused with sentences that name what to do."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.jobs import REFERENCE_FRAME, Pass
from backend.models.catalogue import ModelKind
from backend.models.registry import ModelRegistry
from tests.backend.images import png_bytes, png_pixels
from tests.backend.server import Backend, outputs, start_and_finish

W = H = 64
FRAMES = range(8)
# 4 steps: at strength 0.8 that runs 3 (with 2 steps the single step left barely changes a
# tiny-model frame, prompt or reference alike).
BASE = {"prompt": "an ink drawing", "steps": 4, "seed": 3, "strength": 0.8}
REFERENCE = {**BASE, "style_reference": True, "ip_adapter_scale": 1.0}
IP_ADAPTER = "ip_adapter/tiny-ip-adapter-sd15"
IMAGE_ENCODER = "ip_adapter/image_encoder"


def _frame(t: int) -> bytes:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ball = ((xx - 16.0 - 2.0 * t) ** 2 + (yy - 32.0) ** 2) < 100.0
    wall = 0.5 + 0.25 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    rgb = np.stack([np.where(ball, 0.9, wall), wall, np.where(ball, 0.1, wall)], 2)
    return png_bytes((rgb * 255).astype(np.uint8))


def _lineart_png(t: int) -> bytes:
    xx = np.mgrid[0:H, 0:W][1]
    lines = ((xx + t) % 8 == 0).astype(np.uint8) * 255
    return png_bytes(np.repeat(lines[:, :, None], 3, axis=2))


def _reference(kind: str) -> bytes:
    """A style picture of another size than the job: stripes or a red-blue gradient."""
    yy, xx = np.mgrid[0:40, 0:48].astype(np.float32)
    if kind == "stripes":
        rgb = np.stack([(xx // 4 % 2) * 255, np.full_like(xx, 200), (yy // 4 % 2) * 255], 2)
    else:
        rgb = np.stack([xx / 47 * 255, np.zeros_like(xx), 255 - yy / 39 * 255], 2)
    return png_bytes(rgb.astype(np.uint8))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("ip-adapter")
    b = Backend(data=root / "data", models=tiny_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def _create(c: httpx.Client, params: dict) -> dict:
    params = {"temporal_fusion": False, **params}  # no Vector pass here: fusion would need one
    body = {"kind": "stylize", "frames": list(FRAMES), "width": W, "height": H, "params": params}
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _upload(c: httpx.Client, job: dict, reference: bytes | None) -> None:
    for name, frames in job["missing_inputs"].items():
        for f in frames:
            if name == Pass.REFERENCE.value:
                assert reference is not None and f == REFERENCE_FRAME
                data = reference
            else:
                data = _frame(f) if name == Pass.BEAUTY.value else _lineart_png(f)
            r = c.put(f"/v1/jobs/{job['id']}/inputs/{name}/{f}", content=data)
            assert r.status_code == 200, r.text


def _run(c: httpx.Client, params: dict, reference: bytes | None = None) -> list[bytes]:
    job = _create(c, params)
    _upload(c, job, reference)
    done = start_and_finish(c, job["id"])
    pinned = (done["params"]["ip_adapter"], done["params"]["image_encoder"])
    assert pinned == ((IP_ADAPTER, IMAGE_ENCODER) if reference else (None, None))
    frames = outputs(c, done)
    assert list(frames) == list(FRAMES)
    return list(frames.values())


def _mean_difference(a: list[bytes], b: list[bytes]) -> float:
    """Mean absolute difference of two frame sequences, in 8-bit levels."""
    pixels = [np.stack([png_pixels(f).astype(np.float32) for f in seq]) for seq in (a, b)]
    return float(np.abs(pixels[0] - pixels[1]).mean())


# ---- models ---------------------------------------------------------------------------------


def test_tiny_ip_adapter_and_image_encoder_are_recognised(tiny_models: Path) -> None:
    reg = ModelRegistry(tiny_models).scan()
    adapter = reg.get(IP_ADAPTER, ModelKind.IP_ADAPTER)
    encoder = reg.get(IMAGE_ENCODER, ModelKind.IMAGE_ENCODER)
    assert (adapter.layout, encoder.layout) == ("single_file", "diffusers")
    assert (encoder.path / "preprocessor_config.json").is_file()
    need = [ModelKind.IP_ADAPTER, ModelKind.IMAGE_ENCODER]
    assert reg.missing_for("stylize", need) == []


def test_ip_adapter_loads_offline_into_the_cached_checkpoint(tiny_models: Path) -> None:
    from backend.models.cache import ModelCache, ModelSet

    cache = ModelCache(ModelRegistry(tiny_models).scan(), max_sets=2)
    plain = cache.load(ModelSet(checkpoint="tiny-sd15"))
    styled = cache.load(
        ModelSet(checkpoint="tiny-sd15", ip_adapter=IP_ADAPTER, image_encoder=IMAGE_ENCODER)
    )
    # The adapter changes the UNet in place: a checkpoint of its own, the plain one untouched.
    assert styled.pipe is not plain.pipe and styled.image_encoder is not None
    assert plain.pipe.unet.encoder_hid_proj is None
    assert styled.pipe.unet.config.encoder_hid_dim_type == "ip_image_proj"
    assert styled.pipe.image_encoder is styled.image_encoder.model
    scales = [p.scale for p in styled.pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert scales and all(s == [0.6] for s in scales)


def test_reference_embedding_is_computed_once_per_image(tiny_models: Path) -> None:
    from backend.pipelines.stylize_runtime import Runtime, model_set

    runtime = Runtime()
    loaded = runtime.load(
        ModelRegistry(tiny_models).scan(),
        model_set("tiny-sd15", None, (), None, "cpu", ip_adapter=(IP_ADAPTER, IMAGE_ENCODER)),
    )
    stripes = np.zeros((40, 48, 3), np.float32)
    stripes[:, ::4] = 1.0
    first = runtime.reference_embeds(loaded, stripes)
    assert runtime.reference_embeds(loaded, stripes.copy()) is first  # every chunk of a job
    other = runtime.reference_embeds(loaded, 1.0 - stripes)
    assert other.shape == first.shape == (1, 16) and not np.allclose(other, first)


# ---- through the service --------------------------------------------------------------------


def test_reference_image_steers_the_frames(backend: Backend) -> None:
    with backend.client() as c:
        plain = _run(c, BASE)
        stripes = _run(c, REFERENCE, _reference("stripes"))
        again = _run(c, REFERENCE, _reference("stripes"))
        gradient = _run(c, REFERENCE, _reference("gradient"))
        off = _run(c, {**REFERENCE, "ip_adapter_scale": 0.0}, _reference("stripes"))
    assert stripes == again
    assert _mean_difference(stripes, plain) > 1.0
    assert _mean_difference(gradient, stripes) > 1.0
    assert _mean_difference(off, plain) < 0.5  # scale 0: the adapter adds nothing


@pytest.mark.parametrize(
    "mode",
    [
        {"mode": "text2video", "controlnets": [{"pass": "lineart"}]},
        {"mode": "per_frame"},
    ],
    ids=["text2video", "per_frame"],
)
def test_reference_image_in_the_other_modes(backend: Backend, mode: dict) -> None:
    with backend.client() as c:
        plain = _run(c, {**BASE, **mode})
        styled = _run(c, {**REFERENCE, **mode}, _reference("stripes"))
    assert _mean_difference(styled, plain) > 1.0


def test_a_reference_without_an_ip_adapter_is_a_400_naming_the_folder(
    make_backend, tiny_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models, ignore=shutil.ignore_patterns("ip_adapter"))
    b = make_backend("no-ip", models=models).start()
    with b.client() as c:
        job = _create(c, REFERENCE)
        _upload(c, job, _reference("stripes"))
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "No IP-Adapter installed" in detail, detail
        assert "No image encoder installed" in detail, detail
        assert f"{models.resolve()}/ip_adapter/" in detail, detail


def test_reference_upload_and_named_models_are_checked(backend: Backend) -> None:
    with backend.client() as c:
        job = _create(c, BASE)  # no style_reference: the pass is not one the job takes
        r = c.put(f"/v1/jobs/{job['id']}/inputs/reference/0", content=_reference("stripes"))
        assert r.status_code == 422 and "no reference pass" in r.text, r.text

        job = _create(c, REFERENCE)
        assert job["missing_inputs"]["reference"] == [REFERENCE_FRAME]
        r = c.put(f"/v1/jobs/{job['id']}/inputs/reference/5", content=_reference("stripes"))
        assert r.status_code == 422, r.text
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400 and "reference for frame(s) 0" in r.text, r.text

        job = _create(c, {**REFERENCE, "ip_adapter": "ip-nope"})
        _upload(c, job, _reference("stripes"))
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "ip-nope" in detail and f"{backend.models}/ip_adapter/" in detail, detail
