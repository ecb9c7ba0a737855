"""`python -m backend bench memory`: the backend's peak memory and time for one job, as the
shot grows.

Each case runs in a backend process of its own (`python -m backend serve`, started fresh on a
temporary data folder, driven over HTTP with the add-on's client): its inputs are uploaded, the
job runs, and the process's peak resident memory (VmHWM, Linux: its own high water mark since
it started, so no case inherits another's peak, nor the launcher's) is read before it stops.
Seconds run from the start request to the job being seen done.

Methods and lengths (keys that far apart, or that many frames): render-assisted in-betweens at
640×360 (8, 32, 64) and one row at 1920×1080; flow in-betweens at 640×360 (8, 32, 64); stylize
(64×64, tiny models: 16, 64, 160) and diffusion in-betweens (64×64, tiny models: 8, 32, 64). The
shot is synthetic (stylize_shot: a textured ball rolling across a textured wall, exact passes).
Per method, the ratio of the largest case to the smallest: peak memory (aim: at most 1.3, memory
that does not grow with the shot) and seconds per frame (aim: at most 1.3, time linear in
frames). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jobs import Pass
from .stylize_report import Table, heading, note, number, print_result, ratio
from .stylize_shot import Shot, make_shot

METHODS = ("render", "flow", "stylize", "diffusion")
LABELS = {
    "render": "render-assisted",
    "flow": "flow",
    "stylize": "stylize (tiny)",
    "diffusion": "diffusion (tiny)",
}
AIM_MEMORY_RATIO = 1.3
AIM_TIME_RATIO = 1.3
TERMINAL = {"done", "failed", "canceled"}
TINY_STEPS = 2


@dataclass(frozen=True)
class Case:
    method: str
    width: int
    height: int
    length: int  # frames from key to key (in-betweens), or frames (stylize)

    @property
    def name(self) -> str:
        return f"{self.method}-{self.width}x{self.height}-{self.length}"

    @property
    def group(self) -> str:
        """Cases compared with each other: one method at one size."""
        return f"{LABELS[self.method]} {self.width}×{self.height}"

    @property
    def frames(self) -> list[int]:
        last = self.length - 1 if self.method == "stylize" else self.length
        return list(range(last + 1))


@dataclass(frozen=True)
class Measured:
    case: Case
    peak_mb: float | None
    seconds: float

    @property
    def per_frame(self) -> float:
        return self.seconds / len(self.case.frames)


def cases(quick: bool, methods: tuple[str, ...]) -> list[Case]:
    if quick:
        chosen = [Case("render", 160, 96, n) for n in (4, 8, 16)]
        chosen += [Case("flow", 160, 96, n) for n in (4, 8, 16)]
        chosen += [Case("stylize", 64, 64, n) for n in (8, 16, 32)]
        chosen += [Case("diffusion", 64, 64, n) for n in (4, 8, 20)]
    else:
        chosen = [Case("render", 640, 360, n) for n in (8, 32, 64)]
        chosen += [Case("render", 1920, 1080, 16)]
        chosen += [Case("flow", 640, 360, n) for n in (8, 32, 64)]
        chosen += [Case("stylize", 64, 64, n) for n in (16, 64, 160)]
        chosen += [Case("diffusion", 64, 64, n) for n in (8, 32, 64)]
    return [c for c in chosen if c.method in methods]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=METHODS,
        action="append",
        help="which methods to measure (repeatable; default all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and lengths: checks the benchmark runs"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="a folder already holding the tiny models (make-tiny-models); default: write them",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads of each backend process (default 2)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where models and jobs go (default: a temp dir)"
    )


# ---- one case: a backend process of its own ------------------------------------------------------


def job_body(case: Case) -> dict[str, Any]:
    body: dict[str, Any] = {"frames": case.frames, "width": case.width, "height": case.height}
    if case.method == "stylize":
        params = {"prompt": "gouache", "steps": TINY_STEPS, "strength": 0.6}
        return body | {"kind": "stylize", "params": params}  # temporal_fusion: on
    params = {"method": case.method}
    if case.method == "diffusion":
        params["diffusion"] = {"prompt": "a red ball", "steps": TINY_STEPS}
    return body | {"kind": "inbetween", "keyframes": [0, case.length], "params": params}


def _uploads(job: dict[str, Any]) -> Iterator[tuple[Pass, int]]:
    """Every (pass, frame) the job still needs, from its missing ranges (never one by one
    between keys in the answer)."""
    for name, spans in job["missing_input_ranges"].items():
        for first, last in spans:
            for frame in range(first, last + 1):
                yield Pass(name), frame


def _upload(client: Any, job: dict[str, Any], shot: Shot) -> None:
    for p, frame in _uploads(job):
        made = shot.frame(frame)  # made for this upload, then dropped
        data = made.encoded(Pass.BEAUTY if p is Pass.KEYFRAME else p)
        client.upload(job["id"], p.value, frame, data)


def _wait_done(client: Any, job_id: str, timeout: float = 3600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.job(job_id)
        if job["state"] in TERMINAL:
            if job["state"] != "done":
                raise RuntimeError(f"job {job_id} ended {job['state']}: {job['error']}")
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish in {timeout:.0f} s")
        time.sleep(0.02)  # polling, as the add-on does


def peak_mb(pid: int) -> float | None:
    """A running process's peak resident memory (VmHWM, Linux): its own address space's high
    water mark since it started (exec'd), so neither the process that launched it nor an
    earlier case counts. None where /proc does not say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def run_case(case: Case, data: Path, models: Path, threads: int) -> Measured:
    from .stylize_service import ServiceProcess  # the add-on's HTTP client

    shot = make_shot(case.width, case.height, len(case.frames))
    service = ServiceProcess(data, models, device="cpu", threads=threads)
    client = service.start()
    try:
        job = client.create_job(job_body(case))
        _upload(client, job, shot)
        started = time.perf_counter()
        client.start(job["id"])
        _wait_done(client, job["id"])
        seconds = time.perf_counter() - started
        assert service.proc is not None
        peak = peak_mb(service.proc.pid)  # uploads and the job: everything it ran
    finally:
        client.close()
        service.stop()
    return Measured(case, peak, seconds)


# ---- the report ----------------------------------------------------------------------------------


def report(measured: list[Measured]) -> bool:
    """The table and, per group, the largest case against the smallest. True when every aim
    is met."""
    table = Table(["method", "size", "frames", "peak MB", "seconds", "s/frame"])
    for m in measured:
        c = m.case
        table.add(LABELS[c.method], f"{c.width}×{c.height}", c.length, number(m.peak_mb, 0),
                  number(m.seconds, 2), number(m.per_frame, 3))  # fmt: skip
    heading("peak memory of a fresh backend process running one job, and its time")
    table.print()
    heading(f"largest case / smallest, per method (aims: memory ≤ {AIM_MEMORY_RATIO}, s/frame ≤ "
            f"{AIM_TIME_RATIO})")  # fmt: skip
    ratios = Table(["method and size", "frames", "memory ratio", "s/frame ratio", "aims"])
    met = True
    results: dict[str, dict[str, float | None]] = {}
    groups: dict[str, list[Measured]] = {}
    for m in measured:
        groups.setdefault(m.case.group, []).append(m)
    for group, members in groups.items():
        if len(members) < 2:
            continue
        small = min(members, key=lambda m: m.case.length)
        large = max(members, key=lambda m: m.case.length)
        memory = ratio(large.peak_mb, small.peak_mb)
        time_ratio = ratio(large.per_frame, small.per_frame)
        ok = (memory is not None and memory <= AIM_MEMORY_RATIO) and (
            time_ratio is not None and time_ratio <= AIM_TIME_RATIO
        )
        met &= ok
        span = f"{small.case.length} → {large.case.length}"
        ratios.add(group, span, number(memory, 2), number(time_ratio, 2), "met" if ok else "MISSED")
        key = f"{large.case.method}_{large.case.width}x{large.case.height}"
        results[key] = {"memory_ratio": memory, "time_ratio": time_ratio,
                        "peak_mb": large.peak_mb, "s_per_frame": large.per_frame}  # fmt: skip
    ratios.print()
    for key, figures in results.items():
        print_result(key, figures)
    return met


def _models(args: argparse.Namespace, workdir: Path, methods: tuple[str, ...]) -> Path:
    if not {"stylize", "diffusion"} & set(methods):
        empty = workdir / "no-models"
        empty.mkdir(parents=True, exist_ok=True)
        return empty
    if args.models is not None:
        return Path(args.models).resolve()
    from ..models.tiny import make_tiny_models

    make_tiny_models(workdir / "models")
    return workdir / "models"


def run(args: argparse.Namespace) -> int:
    methods = tuple(args.method or METHODS)
    chosen = cases(args.quick, methods)
    with tempfile.TemporaryDirectory(prefix="framesmith-bench-memory-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        models = _models(args, workdir, methods)
        heading("cases")
        note(f"{len(chosen)} jobs, each in a backend process of its own ({args.threads} threads)")
        measured = []
        for case in chosen:
            data = workdir / case.name
            measured.append(run_case(case, data, models, args.threads))
            m = measured[-1]
            note(f"{case.name}: {number(m.peak_mb, 0)} MB, {m.seconds:.2f} s")
            shutil.rmtree(data, ignore_errors=True)  # a 1080p shot's guides are large
    met = report(measured)
    note("every aim met" if met else "an aim was missed (MISSED above)")
    return 0
