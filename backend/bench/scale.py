"""`python -m backend bench scale`: jobs per minute on a local Ray cluster of 1 and of 2 workers,
and what bounds the head of a larger cluster.

Throughput: the real backend (`serve --ray local:W --ray-threads 1`) is started for W = 1 and
2, both workers held to one CPU thread so that the ratio measures the scheduling (two jobs on
two workers at once, the pieces of a job spread out), not two workers sharing cores. Each run
gets the same batch of flow in-between jobs, queued at once after a warm-up job; the clock runs
from the first start to the last job done. The aim on 2 cores is a ratio of 1.7 or more: the
head (HTTP, SQLite, writing frames) shares those cores with the workers.

Head: how many 1080p frames per second the head can take in from a worker through Ray and
write atomically (bench/scale_head.py), and how many SQLite transactions per second its store
commits. README's "Several GPUs" turns these into the size of cluster one head can feed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.http import BackendClient, Connection

from ..vision.png import encode_png
from . import scale_head
from .stylize_report import Table, heading, note, number, print_result, ratio

REPO = Path(__file__).resolve().parents[2]
AIM_RATIO = 1.7
TERMINAL = {"done", "failed", "canceled"}


@dataclass(frozen=True)
class Batch:
    jobs: int
    width: int
    height: int
    keys: tuple[int, ...]  # every key interval is a piece the workers may share


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=8, help="in-between jobs per run (default 8)")
    p.add_argument("--size", default="640x360", help="frame size WxH (default 640x360)")
    p.add_argument("--quick", action="store_true", help="a small batch, for a smoke run")
    p.add_argument("--workdir", type=Path, default=None, help="keep data folders here")
    p.add_argument("--skip-head", action="store_true", help="skip the head's 1080p figures")


def run(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    batch = Batch(args.jobs, width, height, (0, 8, 16, 24))
    if args.quick:
        batch = Batch(min(args.jobs, 3), 160, 96, (0, 4, 8))
    with tempfile.TemporaryDirectory(prefix="framesmith-scale-") as tmp:
        work = args.workdir or Path(tmp)
        size = f"{batch.width}x{batch.height}"
        heading(f"jobs per minute: {batch.jobs} flow in-between jobs of {size}")
        runs = {w: throughput(work / f"workers-{w}", w, batch) for w in (1, 2)}
        table = Table(["workers", "jobs", "seconds", "jobs/min", "cores: workers", "head", "ray"])
        for w, f in runs.items():
            cores = [number(f.cores[k], 2) for k in ("workers", "head", "ray")]
            table.add(
                str(w), str(batch.jobs), number(f.seconds, 2), number(f.jobs_per_minute, 1), *cores
            )
        table.print()
        speedup = ratio(runs[2].jobs_per_minute, runs[1].jobs_per_minute)
        note(f"2 workers / 1 worker: {number(speedup, 2)}x (aim >= {AIM_RATIO}x on 2 cores)")
        per_core = ratio(
            ratio(runs[2].jobs_per_minute, runs[2].cores["workers"]),
            ratio(runs[1].jobs_per_minute, runs[1].cores["workers"]),
        )
        note(
            f"per core the workers got: {number(per_core, 2)}x (1.00: the scheduling lost nothing;"
            " below 2x overall means other processes held the cores)"
        )
        note(f"load average while measuring (other processes count): {os.getloadavg()[0]:.2f}")
        figures = {"jpm_1": runs[1].jobs_per_minute, "jpm_2": runs[2].jobs_per_minute}
        figures |= {"ratio": speedup, "per_core_ratio": per_core, "cpus": os.cpu_count()}
        figures |= {f"worker_cores_{w}": runs[w].cores["workers"] for w in runs}
        print_result("scale", figures)
        if not args.skip_head:
            scale_head.run(work / "head", quick=args.quick)
    return 0


@dataclass(frozen=True)
class Figures:
    seconds: float
    jobs_per_minute: float
    cores: dict[str, float]  # CPU seconds per wall second: head, workers, Ray's own processes


def throughput(data: Path, workers: int, batch: Batch) -> Figures:
    """The batch on a local cluster of `workers`: its time, and who used the CPUs."""
    service = Service(data, workers)
    client = service.start()
    try:
        found = wait_ready(client, workers)
        run_batch(client, batch, count=1)  # warm-up: imports and first frames on every path
        assert service.proc is not None
        groups = process_groups(service.proc.pid, {w["pid"] for w in found})
        before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        seconds, jpm = run_batch(client, batch, count=batch.jobs)
        cores = {n: (cpu_seconds(groups[n]) - before[n]) / seconds for n in groups}
        return Figures(seconds, jpm, cores)
    finally:
        client.close()
        service.stop()


def process_groups(head: int, workers: set[int]) -> dict[str, set[int]]:
    """The head process, the workers, and the rest of the tree below the head (Ray's own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = set(), [head]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, []))
    return {"head": {head}, "workers": workers, "ray": tree - workers - {head}}


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def run_batch(client: BackendClient, batch: Batch, count: int) -> tuple[float, float]:
    keys = {k: encode_png(scene(batch.width, batch.height, k)) for k in batch.keys}
    frames = list(range(batch.keys[0], batch.keys[-1] + 1))
    ids = []
    for _ in range(count):
        body = {"kind": "inbetween", "frames": frames, "keyframes": list(keys)}
        job = client.create_job(body | {"width": batch.width, "height": batch.height})
        for k, data in keys.items():
            client.upload(job["id"], "keyframe", k, data)
        ids.append(job["id"])
    started = time.perf_counter()
    for job_id in ids:
        client.start(job_id)
    left = set(ids)
    while left:
        time.sleep(0.25)  # one light poll for all: the head shares the cores with the workers
        for job in client.jobs(limit=len(ids) + 1):
            if job["id"] in left and job["state"] in TERMINAL:
                if job["state"] != "done":
                    raise RuntimeError(f"job {job['id']} ended {job['state']}: {job['error']}")
                left.discard(job["id"])
    seconds = time.perf_counter() - started
    return seconds, 60.0 * count / seconds


def scene(width: int, height: int, t: int) -> np.ndarray:
    """A textured wall with a textured square crossing it: motion the flow must find."""
    rng = np.random.default_rng(7)
    wall = rng.integers(60, 200, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    image = np.kron(wall, np.ones((4, 4, 1), np.uint8))[:height, :width].copy()
    side = max(8, height // 4)
    x = int(width * 0.1 + t * width * 0.02)
    y = height // 3
    square = np.random.default_rng(8).integers(0, 255, (side, side, 3), dtype=np.uint8)
    image[y : y + side, x : x + side] = square[: height - y, : max(0, width - x)]
    return image


def wait_ready(client: BackendClient, workers: int, timeout: float = 180.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.health().get("cluster", {}).get("workers", [])
        if sum(w["state"] == "ready" for w in found) >= workers:
            return found
        time.sleep(0.2)  # waiting for the workers to start, with a deadline
    raise RuntimeError(f"{workers} cluster worker(s) did not start in {timeout:.0f} s")


@dataclass
class Service:
    """`serve --ray local:W` in a process of its own, on a data folder of its own."""

    data: Path
    workers: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> BackendClient:
        self.data.mkdir(parents=True, exist_ok=True)
        ready = self.data / "backend.json"
        ready.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "backend", "serve", "--port", "0", "--device", "cpu"]
        command += ["--data", str(self.data), "--ray", f"local:{self.workers}"]
        with open(self.data / "stdout.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--ray-threads", "1"], cwd=REPO, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the backend exited with {self.proc.returncode}")
            try:
                info = json.loads(ready.read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == self.proc.pid:
                return BackendClient(Connection(info["url"], info["token"], timeout=120.0))
            time.sleep(0.05)  # waiting for the ready file, with a deadline
        raise RuntimeError(f"the backend did not become ready in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
