"""Promise 21: a hostile model file is listed as refused, never raised.

A models folder holding `.safetensors` files made to break a parser: a header that is JSON
nested 100,000 deep, a 5000-digit number, tensors whose byte ranges overlap, a file cut short,
and a diffusers folder whose config.json is nested as deep. The real backend lists each one as
refused with a reason, `/v1/models` stays 200 (rescanned and after a restart), and a job that
needs no models still starts.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.backend.server import Backend, wait_for
from tests.promises.support import create_inbetween, square_keys, start

DEEP = 100_000


def safetensors_bytes(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def lora_header(offsets: list[tuple[int, int]]) -> bytes:
    """A LoRA-looking header (recognised by tensor names alone) with the given byte ranges."""
    names = [f"lora_unet_down_blocks_0.lora_down.weight.{i}" for i in range(len(offsets))]
    tensors = {
        name: {"dtype": "F32", "shape": [(stop - start) // 4], "data_offsets": [start, stop]}
        for name, (start, stop) in zip(names, offsets, strict=True)
    }
    return json.dumps(tensors).encode()


def hostile_files(models: Path) -> dict[str, str]:
    """Write the hostile files; returns {path relative to models: a word its reason holds}."""
    files = {
        "deep.safetensors": (safetensors_bytes(b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}", b""),
                             "nested"),
        "long_number.safetensors": (safetensors_bytes(
            b'{"lora_unet_x.lora_down.weight": {"dtype": "F32", "shape": [' + b"9" * 5000
            + b'], "data_offsets": [0, 4]}}', b"\0" * 4), "cannot be read"),
        "overlap.safetensors": (safetensors_bytes(lora_header([(0, 8), (4, 12)]), b"\0" * 12),
                                "overlaps"),
        "truncated.safetensors": (safetensors_bytes(lora_header([(0, 4096)]), b"\0" * 4096)[:2000],
                                  "outside the file"),
    }  # fmt: skip
    for name, (body, _) in files.items():
        (models / name).write_bytes(body)
    folder = models / "controlnet" / "deep_config"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"_class_name": ' + "[" * DEEP + "]" * DEEP + "}")
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(
        safetensors_bytes(b'{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}", b"")
    )
    reasons = {name: word for name, (_, word) in files.items()}
    reasons["controlnet/deep_config/diffusion_pytorch_model.safetensors"] = "nested"
    return reasons


def assert_all_refused(b: Backend, expected: dict[str, str]) -> None:
    with b.client() as c:
        r = c.get("/v1/models", params={"rescan": True})
        assert r.status_code == 200, r.text
        body = r.json()
    refused = {item["path"]: item["reason"] for item in body["refused"]}
    for path, word in expected.items():
        assert path in refused, f"{path} is not listed as refused: {body['refused']}"
        assert word in refused[path], (path, refused[path])
        assert "Traceback" not in refused[path]
    installed = [e["name"] for entries in body["installed"].values() for e in entries]
    assert installed == [], f"hostile files were installed: {installed}"


def test_hostile_model_files_are_refused_and_models_stays_200(make_backend, tmp_path: Path) -> None:
    models = tmp_path / "hostile-models"
    models.mkdir()
    expected = hostile_files(models)
    b: Backend = make_backend("hostile", models=models).start()
    assert_all_refused(b, expected)
    keys = square_keys({0: 4.0, 4: 20.0})
    for _ in range(2):  # before and after a restart: the scan on the start path never raises
        with b.client() as c:
            job = create_inbetween(c, keys, range(0, 5))
            start(c, job["id"])
            assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"
        b.stop()
        b.start()
    assert_all_refused(b, expected)
