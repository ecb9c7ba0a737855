"""Promise 6: file access stays inside the data folder.

Traversal (`..`, absolute paths, encoded `%2e%2e` and `%2f`, backslashes, NUL) in every path-like
field (job ids, pass names, frame numbers in the URL; model names in a job's params) is refused,
and so are symlinks planted in the models folder and in the data folder that point outside: a
canary folder outside keeps every file's content and mtime, and gains no file.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from backend.files import TMP_MARK
from backend.store_files import frame_name
from tests.backend.images import png_bytes, png_pixels
from tests.backend.server import Backend, wait_for
from tests.promises.support import (
    FileFacts,
    create_inbetween,
    file_facts,
    square_keys,
    start,
)

TRAVERSALS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2fetc%2fpasswd",
    "..%5c..%5cwindows",
    "..\\..\\windows",
    "%00",
    "a%00b",
    "%252e%252e",
    "....%2f%2f",
    "~root",
]


def raw_status(b: Backend, method: str, path: str) -> int:
    """Send the path byte for byte (an HTTP library would normalise the dots away)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {b.host_header}\r\n"
        f"Authorization: Bearer {b.token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", b.info["port"]), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        reply = s.recv(4096)
    return int(reply.split(b"\r\n", 1)[0].split()[1])


def outside_facts(folder: Path) -> dict[str, FileFacts]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): file_facts(p.parent)[p.name] for p in files}


def make_outside(root: Path, tiny_models: Path, canary_png: bytes) -> Path:
    from backend.models.tiny import CHECKPOINT_FILE, LORA_FILE  # imports diffusers: only here

    outside = root / "outside"
    (outside / "models").mkdir(parents=True)
    (outside / "canary.png").write_bytes(canary_png)
    (outside / f"stray.png{TMP_MARK}00000000").write_bytes(b"not ours to sweep")
    shutil.copy(tiny_models / CHECKPOINT_FILE, outside / "models" / "ckpt.safetensors")
    shutil.copy(tiny_models / LORA_FILE, outside / "models" / "lora.safetensors")
    return outside


def test_traversal_in_url_fields_is_refused(shared_backend: Backend) -> None:
    b = shared_backend
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 2: 12.0}), range(0, 3), upload=False)
    jid = job["id"]
    for bad in TRAVERSALS:
        paths = [
            ("GET", f"/v1/jobs/{bad}"),
            ("DELETE", f"/v1/jobs/{bad}"),
            ("POST", f"/v1/jobs/{bad}/start"),
            ("GET", f"/v1/jobs/{bad}/outputs/0"),
            ("PUT", f"/v1/jobs/{bad}/inputs/keyframe/0"),
            ("PUT", f"/v1/jobs/{jid}/inputs/{bad}/0"),
            ("PUT", f"/v1/jobs/{jid}/inputs/keyframe/{bad}"),
            ("GET", f"/v1/jobs/{jid}/outputs/{bad}"),
        ]
        for method, path in paths:
            status = raw_status(b, method, path)
            assert status in (400, 404, 405, 422), (method, path, status)
    # unencoded dots and slashes: the route never matches, whatever the server makes of them
    for path in ("/v1/jobs/../../etc/passwd", f"/v1/jobs/{jid}/outputs/../../../../etc/passwd"):
        assert raw_status(b, "GET", path) in (400, 404), path
    with b.client() as c:
        assert c.get(f"/v1/jobs/{jid}").json()["missing_inputs"] == {"keyframe": [0, 2]}


def test_model_names_cannot_reach_outside_the_models_folder(
    make_backend, tiny_models: Path, tmp_path: Path
) -> None:
    beauty = png_bytes(square_keys({0: 8.0}, 64, 64)[0])
    outside = make_outside(tmp_path, tiny_models, beauty)
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    (models / "checkpoints" / "linked.safetensors").symlink_to(
        outside / "models" / "ckpt.safetensors"
    )
    (models / "lora" / "linked").symlink_to(outside / "models", target_is_directory=True)
    before = outside_facts(outside)

    b = make_backend(models=models).start()
    with b.client() as c:
        listing = c.get("/v1/models").json()
        names = {e["name"] for entries in listing["installed"].values() for e in entries}
        assert "checkpoints/tiny-sd15-ldm" in names
        assert not any("linked" in n or "ckpt" in n for n in names), names
        refused = {r["path"]: r["reason"] for r in listing["refused"]}
        assert any("linked" in p and "outside" in why for p, why in refused.items()), refused

        rel = Path("..") / "outside" / "models"
        bad_names = [
            str(rel / "ckpt"),
            str(rel / "ckpt.safetensors"),
            str(outside / "models" / "ckpt.safetensors"),
            str(outside / "models" / "ckpt"),
            "checkpoints/../../outside/models/ckpt",
            "..\\outside\\models\\ckpt",
            "%2e%2e/outside/models/ckpt",
            "checkpoints/linked",
            "linked",
            "ckpt\x00.safetensors",
        ]
        fields = {
            "checkpoint": lambda n: {"checkpoint": n},
            "lora": lambda n: {"lora": {"name": n.replace("ckpt", "lora")}},
            "controlnet": lambda n: {"controlnets": [{"pass": "lineart", "model": n}]},
        }
        refused_at_start = 0
        for field, params_for in fields.items():
            for name in bad_names:
                params = {"mode": "per_frame", "strength": 0.5, "steps": 4, **params_for(name)}
                body = {"kind": "stylize", "frames": [0], "width": 64, "height": 64}
                r = c.post("/v1/jobs", json={**body, "params": params})
                if r.status_code == 422 and "\x00" in name:
                    continue  # refused outright
                assert r.status_code == 201, r.text
                jid = r.json()["id"]
                for p in ("beauty", "lineart") if field == "controlnet" else ("beauty",):
                    up = c.put(f"/v1/jobs/{jid}/inputs/{p}/0", content=beauty)
                    assert up.status_code == 200, up.text
                r = c.post(f"/v1/jobs/{jid}/start")
                assert r.status_code == 400, (field, name, r.status_code, r.text)
                assert r.json()["detail"].startswith("models missing"), r.text
                assert c.get(f"/v1/jobs/{jid}").json()["state"] == "awaiting_inputs"
                refused_at_start += 1
        assert refused_at_start >= len(fields) * (len(bad_names) - 1)
    assert outside_facts(outside) == before


def test_symlinks_in_the_data_folder_are_never_followed(make_backend, tmp_path: Path) -> None:
    keys = square_keys({0: 4.0, 2: 20.0})
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = png_bytes(keys[0][::-1].copy())  # a valid frame of the right size, but not ours
    (outside / "canary.png").write_bytes(canary)
    (outside / f"stray.png{TMP_MARK}00000000").write_bytes(b"not ours to sweep")
    before = outside_facts(outside)

    b = make_backend().start()
    jobs = b.data / "jobs"
    with b.client() as c:
        # A: a frame and an input file that are symlinks to a file outside
        a = create_inbetween(c, keys, range(0, 3), upload=False)["id"]
        (jobs / a / "outputs").mkdir()
        (jobs / a / "outputs" / frame_name(1, "png")).symlink_to(outside / "canary.png")
        (jobs / a / "inputs" / "keyframe").mkdir(parents=True)
        (jobs / a / "inputs" / "keyframe" / frame_name(0, "png")).symlink_to(outside / "canary.png")
        seen = c.get(f"/v1/jobs/{a}").json()
        assert seen["finished_frames"] == [] and seen["missing_inputs"] == {"keyframe": [0, 2]}
        r = c.get(f"/v1/jobs/{a}/outputs/1")
        assert r.status_code == 404, "a symlinked frame must not be served"
        assert c.post(f"/v1/jobs/{a}/start").status_code == 400
        for f, img in keys.items():  # uploading replaces the link itself, not its target
            assert c.put(f"/v1/jobs/{a}/inputs/keyframe/{f}", content=png_bytes(img)).is_success
        start(c, a)
        assert wait_for(c, a, {"done", "failed"})["state"] == "done"
        served = png_pixels(c.get(f"/v1/jobs/{a}/outputs/1").content)
        assert (
            served.shape == keys[0].shape and not (jobs / a / "outputs" / "000001.png").is_symlink()
        )

        # B: the outputs folder is a symlink to a folder outside: the job fails, writes nothing
        bj = create_inbetween(c, keys, range(0, 3))["id"]
        (jobs / bj / "outputs").symlink_to(outside, target_is_directory=True)
        start(c, bj)
        failed = wait_for(c, bj, {"done", "failed"})
        assert failed["state"] == "failed" and "symlink" in failed["error"], failed
        assert c.get(f"/v1/jobs/{bj}/outputs/0").status_code == 404

        # C: the inputs folder is a symlink: uploads are refused with a sentence
        cj = create_inbetween(c, keys, range(0, 3), upload=False)["id"]
        (jobs / cj / "inputs").symlink_to(outside, target_is_directory=True)
        r = c.put(f"/v1/jobs/{cj}/inputs/keyframe/0", content=png_bytes(keys[0]))
        assert r.status_code == 409 and "symlink" in r.json()["detail"]

        # D: a whole job folder that is a symlink
        dj = create_inbetween(c, keys, range(0, 3), upload=False)["id"]
        shutil.rmtree(jobs / dj)
        (jobs / dj).symlink_to(outside, target_is_directory=True)
        assert c.get(f"/v1/jobs/{dj}/outputs/0").status_code == 404
    b.stop()
    b.start()  # the start-up sweep of temp files does not follow the links
    with b.client() as c:
        for job_id in (bj, cj, dj):  # DELETE removes links, never what they point to
            assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
    assert not (jobs / dj).exists()
    assert outside_facts(outside) == before
