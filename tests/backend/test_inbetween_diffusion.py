"""Diffusion in-betweening (SparseCtrl keyframes in AnimateDiff) with the tiny models: clip
planning and the method registry in-process; whole jobs through the real service (uneven keys
with a gap longer than one clip, exact keys, seeds, cancel, missing and unusable models)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backend.jobs import InputError, JobSpec
from backend.pipelines import inbetween_methods
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_diffusion import clip_seed, plan_clips
from backend.pipelines.inbetween_params import InbetweenParams
from tests.backend.images import png_bytes, png_pixels, textured_square_scene
from tests.backend.server import Backend, outputs, start_and_finish, wait_for, wait_until

W = H = 64
# Keys 0 → 3 fit one clip; 3 → 20 is 18 frames, longer than the 16-frame window: anchors first.
KEYS = {0: 8.0, 3: 14.0, 20: 40.0}  # frame -> x of the square
FRAMES = [0, 1, 2, 3, 5, 9, 12, 14, 19, 20, 22]
DIFFUSION = {"prompt": "a red square", "steps": 2, "seed": 5}


def key_image(frame: int) -> np.ndarray:
    return textured_square_scene(W, H, KEYS[frame])


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("inbetween-diffusion")
    b = Backend(data=root / "data", models=tiny_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def create(
    c: httpx.Client, diffusion: dict[str, Any], frames: list[int] = FRAMES, **params: Any
) -> dict:
    body = {
        "kind": "inbetween",
        "frames": frames,
        "keyframes": sorted(KEYS),
        "width": W,
        "height": H,
        "params": {"method": "diffusion", "diffusion": diffusion, **params},
    }
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload_keys(c: httpx.Client, job: dict, images: dict[int, np.ndarray] | None = None) -> None:
    for f in job["keyframes"]:
        image = images[f] if images else key_image(f)
        r = c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{f}", content=png_bytes(image))
        assert r.status_code == 200, r.text


def run(
    c: httpx.Client, diffusion: dict[str, Any], frames: list[int] = FRAMES, **params: Any
) -> dict:
    job = create(c, diffusion, frames, **params)
    upload_keys(c, job)
    return start_and_finish(c, job["id"])


# --- clips and the registry (no models) --------------------------------------------------------


def test_a_short_gap_is_one_clip_with_the_keys_at_its_ends() -> None:
    assert plan_clips(range(3, 10), 16, {5}) == [tuple(range(3, 10))]
    assert plan_clips(range(3, 10), 16, {3, 9}) == []  # only keys wanted: nothing to make


@pytest.mark.parametrize(("gap", "length"), [(17, 16), (60, 16), (300, 8), (40, 3)])
def test_a_long_gap_goes_through_anchors_and_every_clip_has_known_ends(
    gap: int, length: int
) -> None:
    points = range(0, gap + 1)
    wanted = set(range(1, gap, 3))
    clips = plan_clips(points, length, wanted)
    known = {0, gap}
    for clip in clips:
        assert 3 <= len(clip) <= length
        assert list(clip) == sorted(set(clip))
        assert clip[0] in known and clip[-1] in known, clip  # both ends made before this clip
        known |= set(clip)
    assert wanted <= known
    for i, clip in enumerate(clips):  # no clip runs for nothing
        later_ends = {c[e] for c in clips[i + 1 :] for e in (0, -1)}
        assert set(clip[1:-1]) & (wanted | later_ends), clip


def test_a_clip_only_runs_where_frames_are_wanted() -> None:
    # 0 → 60 in four stretches between anchors 0, 15, 30, 45, 60; frame 50 needs only the last.
    assert plan_clips(range(0, 61), 16, {50}) == [(0, 15, 30, 45, 60), tuple(range(45, 61))]


def test_clip_seeds_depend_on_the_seed_and_the_clip() -> None:
    assert clip_seed(5, (3, 4, 5)) == clip_seed(5, (3, 4, 5))
    assert len({clip_seed(5, (3, 4, 5)), clip_seed(6, (3, 4, 5)), clip_seed(5, (3, 4))}) == 3


def test_every_method_name_has_a_registered_method() -> None:
    method_type = InbetweenParams.model_fields["method"].annotation
    assert set(inbetween_methods.names()) == set(method_type.__args__)
    for name in inbetween_methods.names():
        method = inbetween_methods.get(name)
        assert all(hasattr(method, a) for a in ("check_job", "missing_models", "run_chunk"))
    with pytest.raises(LookupError, match="known methods"):
        inbetween_methods.get("rife")


def test_sizes_and_options_are_checked_when_the_job_is_made() -> None:
    def job(width: int, **params: Any) -> JobSpec:
        return JobSpec("j", "inbetween", width, 64, (0, 1, 2), (0, 2), params)

    InbetweenPipeline().check_job(job(64, method="diffusion"))
    with pytest.raises(InputError, match=r"60×64 is not a multiple of 8.*56 or 64"):
        InbetweenPipeline().check_job(job(60, method="diffusion"))
    with pytest.raises(InputError, match=r"params\.diffusion is for method 'diffusion'"):
        InbetweenPipeline().check_job(job(64, method="flow", diffusion={"seed": 1}))
    with pytest.raises(InputError, match="clip_length"):
        InbetweenPipeline().check_job(job(64, method="diffusion", diffusion={"clip_length": 40}))


# --- whole jobs through the real service -------------------------------------------------------


@pytest.fixture(scope="module")
def full_job(backend: Backend) -> tuple[dict, dict[int, bytes]]:
    """The job over FRAMES with DIFFUSION, run once: (finished job, PNG bytes by frame)."""
    with backend.client() as c:
        done = run(c, DIFFUSION)
        return done, outputs(c, done)


def test_uneven_keys_give_exactly_the_requested_frames_and_untouched_keys(
    full_job: tuple[dict, dict[int, bytes]],
) -> None:
    done, frames = full_job
    assert done["finished_frames"] == FRAMES
    # The stored params name the models that ran, not "the default".
    pinned = done["params"]["diffusion"]
    assert pinned["checkpoint"] and pinned["motion_adapter"]
    assert pinned["sparsectrl"] == "sparsectrl/tiny-sparsectrl-rgb"
    pictures = {f: png_pixels(data) for f, data in frames.items()}
    for f in KEYS:
        np.testing.assert_array_equal(pictures[f], key_image(f))
    np.testing.assert_array_equal(pictures[22], key_image(20))  # after the last key: held
    between = [f for f in FRAMES if f not in KEYS and f < 20]
    for f in between:
        assert pictures[f].shape == (H, W, 3)
        assert not any(np.array_equal(pictures[f], key_image(k)) for k in KEYS)
    assert len({pictures[f].tobytes() for f in between}) == len(between)  # each its own


def test_the_same_seed_gives_the_same_frames_whichever_are_asked_for(
    backend: Backend, full_job: tuple[dict, dict[int, bytes]]
) -> None:
    first = full_job[1]
    with backend.client() as c:
        # A job of its own, asking for fewer frames: frame 14 needs only the anchors and its
        # stretch, frame 1 the first interval's clip.
        again = outputs(c, run(c, DIFFUSION, [1, 14]))
        other = outputs(c, run(c, {**DIFFUSION, "seed": 6}, [1, 3, 14]))
    assert again == {f: first[f] for f in (1, 14)}, "the same seed must give identical frames"
    assert other[1] != first[1] and other[14] != first[14]
    assert other[3] == first[3]  # a key


def test_on_twos_holds_pairs(backend: Backend) -> None:
    with backend.client() as c:
        out = outputs(c, run(c, DIFFUSION, list(range(3, 21)), on_twos=True))
    assert out[4] == out[3]  # the key, held for two
    for t in range(5, 19, 2):  # then 5,6 / 7,8 / ... / 17,18 show one drawing each
        assert out[t] == out[t + 1]
    assert len({out[t] for t in range(3, 21)}) == 10  # key, 8 drawings, 19, key


def test_cancel_stops_within_a_step(backend: Backend) -> None:
    with backend.client() as c:
        job = create(c, {**DIFFUSION, "steps": 200}, [1, 2])
        upload_keys(c, job)
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        wait_until(
            c, job["id"], lambda j: j["progress"]["stage"] == "denoise" and j["progress"]["done"]
        )
        at_cancel = c.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status().json()
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
    assert final["state"] == "canceled"
    assert final["finished_frames"] == []
    # The step running when the cancel arrived may still report; no step after it.
    assert final["progress"]["done"] <= at_cancel["progress"]["done"] + 1 < 200


def test_transparent_keys_fail_with_a_sentence(backend: Backend) -> None:
    images = {f: key_image(f) for f in KEYS}
    images[3] = np.concatenate([images[3], np.full((H, W, 1), 128, np.uint8)], axis=2)
    with backend.client() as c:
        job = create(c, DIFFUSION, [1, 2])
        upload_keys(c, job, images)
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
    assert final["state"] == "failed"
    assert "Keyframe 3 has transparent pixels" in final["error"], final["error"]
    assert "method 'flow'" in final["error"]


def test_missing_or_wrong_models_are_a_400_naming_the_folder(
    make_backend: Any, tiny_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "no-sparsectrl"
    ignore = shutil.ignore_patterns("sparsectrl", "controlnet", "lora")
    shutil.copytree(tiny_models, models, ignore=ignore)
    b = make_backend(models=models).start()
    with b.client() as c:
        job = create(c, DIFFUSION, [1])
        upload_keys(c, job)
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert detail.startswith("models missing: No SparseCtrl model installed"), detail
        assert f"{models.resolve()}/sparsectrl/" in detail and "sparsectrl-rgb" in detail

        # A named model that is not there, and one of the wrong kind, are named too.
        for diffusion, words in (
            ({"sparsectrl": "sc-nope"}, ["sc-nope", f"{models.resolve()}/sparsectrl/"]),
            ({"checkpoint": "motion/tiny-motion-adapter"}, ["not a checkpoint"]),
        ):
            job = create(c, {**DIFFUSION, **diffusion}, [1])
            upload_keys(c, job)
            r = c.post(f"/v1/jobs/{job['id']}/start")
            assert r.status_code == 400, r.text
            assert all(w in r.json()["detail"] for w in words), r.json()["detail"]

        # Flow needs no models: the same backend runs it.
        job = c.post(
            "/v1/jobs",
            json={
                "kind": "inbetween",
                "frames": [1],
                "keyframes": [0, 3],
                "width": W,
                "height": H,
                "params": {"method": "crossfade"},
            },
        ).json()
        upload_keys(c, job)
        assert c.post(f"/v1/jobs/{job['id']}/start").status_code == 202


def test_keys_a_million_frames_apart_plan_without_listing_the_frames() -> None:
    import tracemalloc

    tracemalloc.start()
    clips = plan_clips(range(-1_048_574, 1_048_575), 16, {7, 500_000})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, f"planning took {peak} bytes"
    made = {f for clip in clips for f in clip}
    assert {7, 500_000} <= made and all(3 <= len(c) <= 16 for c in clips)
