"""Promise 25: the models folder is scanned once, and never under a job start.

The backend scans its models folder once at start. Listing the models, checking a request and
starting jobs reuse that scan; `GET /v1/models?rescan=true` scans again, and a job start that
arrives while such a rescan reads a slow folder (a 20 MB safetensors header) is answered first.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

from tests.backend.server import Backend, wait_for
from tests.promises.support import create_inbetween, square_keys, start

SCANNED = "scanned in"


def scans(b: Backend) -> int:
    log = b.data / "logs" / "backend.log"
    return sum("models folder" in line and SCANNED in line for line in log.read_text().splitlines())


def wait_scans(b: Backend, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while scans(b) < count:
        assert time.monotonic() < deadline, f"fewer than {count} scans of the models folder"
        time.sleep(0.05)  # polling the log, with a deadline


def slow_header_file(folder: Path, tensors: int = 200_000) -> None:
    """A valid safetensors file whose header takes the scanner seconds to read."""
    header = {
        f"model.diffusion_model.block{i}.weight": {
            "dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]
        }
        for i in range(tensors)
    }  # fmt: skip
    raw = json.dumps(header).encode()
    with open(folder / "slow.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * tensors))


def test_the_models_folder_is_scanned_once_and_again_only_on_request(make_backend) -> None:
    b: Backend = make_backend().start()
    wait_scans(b, 1)
    with b.client() as c:
        for _ in range(3):
            assert c.get("/v1/models").status_code == 200
        job = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(5))
        check = c.post("/v1/jobs/check", json={k: job[k] for k in
                       ("kind", "frames", "keyframes", "width", "height", "params")})  # fmt: skip
        assert check.json()["ok"] is True, check.text
        start(c, job["id"])
        assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"
        assert scans(b) == 1, "listing, checking or starting scanned the models folder again"
        assert c.get("/v1/models", params={"rescan": "true"}).status_code == 200
    assert scans(b) == 2


def test_a_job_start_never_waits_for_a_rescan(make_backend, tmp_path: Path) -> None:
    models = tmp_path / "slow-models"
    models.mkdir()
    slow_header_file(models)
    b: Backend = make_backend(models=models).start()
    wait_scans(b, 1)
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(5))
    answered: dict[str, float] = {}

    def rescan() -> None:
        with b.client() as rc:
            assert rc.get("/v1/models", params={"rescan": "true"}).status_code == 200
        answered["rescan"] = time.monotonic()

    read_before = bytes_read(b.proc.pid)
    worker = threading.Thread(target=rescan)
    worker.start()
    deadline = time.monotonic() + 30
    while bytes_read(b.proc.pid) - read_before < 1_000_000:  # the rescan is reading the header
        assert time.monotonic() < deadline and "rescan" not in answered, "no rescan underway"
        time.sleep(0.005)  # polling the backend's read counter, with a deadline
    with b.client() as c:
        started = c.post(f"/v1/jobs/{job['id']}/start")
    answered["start"] = time.monotonic()
    assert started.status_code == 202, started.text
    worker.join(120)
    assert "rescan" in answered, "the rescan did not answer"
    assert answered["start"] < answered["rescan"], "the start waited for the rescan"


def bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no read counter")
