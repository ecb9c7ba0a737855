"""The head's side of `bench scale`: what one head can take from a cluster.

Every frame a worker makes comes back to the head and is written there, and every progress
note is a SQLite transaction: these bound how many GPU machines one head can feed. Measured on
a render-like 1920x1080 frame (its PNG as a worker sends it):

- write: the store's atomic write (temp file, fsync, rename, fsync of the folder), per frame;
- receive: frames streamed from a Ray actor on this machine to the head, as the slots read them
  (over a network the link adds its own bound: size / bandwidth);
- receive + write: the two in a row, as the head does them;
- SQLite: progress updates committed per second (one transaction each, WAL).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster.messages import FrameDone
from ..cluster.runner import CODE_ROOT, import_ray
from ..store import Progress, Store
from ..vision.png import encode_png
from .stylize_report import Table, heading, note, number, print_result

WIDTH, HEIGHT = 1920, 1080


class FrameSender:
    """A Ray actor sending the same PNG back `count` times, as a worker streams its frames."""

    def send(self, png: bytes, count: int) -> Iterator[FrameDone]:
        for i in range(count):
            yield FrameDone(i, png)


def run(work: Path, quick: bool) -> dict[str, float]:
    heading("what one head can take: 1080p frames in and written, SQLite transactions")
    work.mkdir(parents=True, exist_ok=True)
    png = encode_png(render_like_frame())
    frames = 12 if quick else 60
    store = Store(work / "data")
    try:
        job = new_job(store, frames)
        write_fps = write_rate(store, job, png, frames)
        receive_fps, both_fps = receive_rates(store, new_job(store, frames), png, frames)
        tx_s = sqlite_rate(store, job, 300 if quick else 3000)
    finally:
        store.close()
    mb = len(png) / 1e6
    table = Table(["what, at 1920x1080", "per second", "MB/s"])
    table.add("frames written (atomic, fsync)", number(write_fps, 1), number(write_fps * mb, 1))
    table.add("frames received from a worker", number(receive_fps, 1), number(receive_fps * mb, 1))
    table.add("frames received and written", number(both_fps, 1), number(both_fps * mb, 1))
    table.add("SQLite transactions (progress)", number(tx_s, 0), "")
    table.print()
    note(f"one frame's PNG: {mb:.2f} MB; a 1 Gbit/s link carries {125 / mb:.0f} of them a second")
    figures = {
        "png_mb": mb,
        "write_fps": write_fps,
        "receive_fps": receive_fps,
        "receive_write_fps": both_fps,
        "sqlite_tx_s": tx_s,
    }
    print_result("head", figures)
    return figures


def render_like_frame() -> np.ndarray:
    """Smooth shading, edges and a little grain: compresses like a stylized render does."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    shade = 0.5 + 0.3 * np.sin(xx / 97.0) * np.cos(yy / 61.0)
    shapes = ((xx // 240 + yy // 180) % 3) * 0.12
    grain = np.random.default_rng(3).normal(0.0, 0.02, (HEIGHT, WIDTH)).astype(np.float32)
    channels = [shade + shapes + grain, shade * 0.8 + grain, 1.0 - shade * 0.6 + shapes]
    return (np.clip(np.stack(channels, 2), 0.0, 1.0) * 255).astype(np.uint8)


def new_job(store: Store, frames: int) -> str:
    job, _ = store.create_job(
        kind="inbetween",
        width=WIDTH,
        height=HEIGHT,
        frames=tuple(range(frames)),
        keyframes=(0, frames - 1),
        params={},
        idempotency_key=None,
        request_hash="",
    )
    return job.id


def write_rate(store: Store, job_id: str, png: bytes, frames: int) -> float:
    started = time.perf_counter()
    for frame in range(frames):
        store.write_output(job_id, frame, png)
    return frames / (time.perf_counter() - started)


def receive_rates(store: Store, job_id: str, png: bytes, frames: int) -> tuple[float, float]:
    """(received only, received and written) frames per second from an actor on a local
    cluster started here."""
    ray = import_ray(local=True)
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(CODE_ROOT)}},
    )
    try:
        sender: Any = ray.remote(FrameSender).options(num_cpus=1).remote()
        ray.get(sender.__ray_ready__.remote())
        rates = []
        for write in (False, True):
            started = time.perf_counter()
            for ref in sender.send.remote(png, frames):
                done: FrameDone = ray.get(ref)
                if write:
                    store.write_output(job_id, done.frame, done.png)
            rates.append(frames / (time.perf_counter() - started))
        return rates[0], rates[1]
    finally:
        ray.shutdown()


def sqlite_rate(store: Store, job_id: str, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        store.set_progress(job_id, Progress("denoise", i, count, 0, 1))
    return count / (time.perf_counter() - started)
