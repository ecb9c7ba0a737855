"""Part 1: what the service adds to a stylize job, against the diffusers pipeline called directly.

The same job both ways: the tiny models, the same frames and passes, seed, steps and
ControlNets. Through the service: the real backend process driven by the add-on's own job runner
(client/jobs.py) from input files on disk, as a take runs: check + create + upload (in
parallel) + start + poll + download over HTTP. Directly: AnimateDiffVideoToVideoControlNetPipeline
built from the same components (loaded by the backend's own loader from the same models folder),
fed the same conditioning images in memory. Both sides are warmed first (models loaded, pipelines built,
one throwaway run), so model loading is reported apart from the run. Fusion is turned off on
the service side: it is a feature to measure (part 3), not overhead.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.frames import frame_file
from client.http import BackendClient, Connection
from client.jobs import Done, JobRunner, Message
from client.request import Request
from client.request_builder import ControlNetSetting, Settings, build_request
from client.request_builder import Shot as ShotInfo

from ..jobs import Pass
from ..pipelines.stylize_params import StylizeParams
from .stylize_report import Table, heading, note, number, print_result, ratio
from .stylize_service import ServiceError, SharedService
from .stylize_shot import Shot, make_shot

NETS = (
    {"pass": "depth"},
    {"pass": "normal", "scale": 0.8},
    {"pass": "lineart", "scale": 0.9, "end": 0.8},
)


@dataclass(frozen=True)
class OverheadConfig:
    width: int
    height: int
    frames: int
    steps: int
    strength: float
    repeats: int
    threads: int
    poll_interval: float


def job_request(cfg: OverheadConfig) -> Request:
    """The job as the add-on builds it from the scene's settings; its params feed both sides."""
    settings = Settings(
        prompt="a watercolour painting of a red ball",
        seed=7,
        steps=cfg.steps,
        guidance=7.5,
        strength=cfg.strength,
        stylize_mode="video2video",
        scheduler="ddim",
        controlnets=tuple(
            ControlNetSetting(n["pass"], True, n.get("scale", 1.0), end=n.get("end", 1.0))
            for n in NETS
        ),
        chunk_size=max(cfg.frames, 2),
        overlap=0,
        temporal_fusion=False,
    )
    shot = ShotInfo(cfg.width, cfg.height, tuple(range(cfg.frames)))
    return build_request("stylize", settings, shot)


def write_inputs(shot: Shot, request: Request, folder: Path) -> dict[tuple[str, int], Path]:
    """The passes the request uploads, as files: what Blender leaves in a take's folder."""
    files = {}
    for name, frames in request.inputs().items():
        p = Pass(name)
        ext = "png" if p in (Pass.BEAUTY, Pass.LINEART) else "exr"
        (folder / name).mkdir(parents=True, exist_ok=True)
        for f in frames:
            path = folder / name / f"{f:04d}.{ext}"
            path.write_bytes(shot.frames[f].encoded(p))
            files[name, f] = path
    return files


def bytes_per_frame(files: dict[tuple[str, int], Path], frames: int) -> dict[str, float]:
    """Bytes uploaded per output frame, by pass."""
    out: dict[str, float] = {}
    for (name, _), path in sorted(files.items()):
        out[name] = out.get(name, 0.0) + path.stat().st_size / frames
    return out


class TimedClient(BackendClient):
    """The add-on's client, noting when each request of a job began and ended (any thread)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self.calls: list[tuple[str, str, float, float]] = []  # method, path, began, ended
        self.done_seen: tuple[float, dict[str, Any]] | None = None
        self._noted = threading.Lock()

    def _request(self, method: str, path: str, **kw: Any) -> bytes:
        began = time.time()
        answer = super()._request(method, path, **kw)
        with self._noted:
            self.calls.append((method, path, began, time.time()))
        return answer

    def job(self, job_id: str) -> dict[str, Any]:
        job = super().job(job_id)
        if job["state"] == "done" and self.done_seen is None:
            self.done_seen = (time.time(), job)
        return job


@dataclass(frozen=True)
class RunnerTiming:
    """Wall-clock phases of one take as the job runner drove it (seconds)."""

    check_s: float  # health + the request's check, before anything is read
    upload_s: float  # create -> the last input PUT answered
    start_s: float  # the start request
    server_s: float  # start answered -> the server marked the job done (the server's own clock)
    poll_s: float  # the server marked it done -> the runner's poll saw it
    download_s: float  # every output GET, added up (some run while the job still runs)
    total_s: float  # runner started -> its final message
    outputs: dict[int, bytes] = field(repr=False)


def run_take(
    client: BackendClient, request: Request, inputs: dict[tuple[str, int], Path], work: Path,
    poll_interval: float,
) -> RunnerTiming:  # fmt: skip
    """One take through the add-on's job runner, on this thread (as in background mode)."""
    timed = TimedClient(client.connection)
    take = f"bench-{uuid.uuid4().hex[:12]}"
    runner = JobRunner(take, lambda: timed, work / take, request=request, inputs=inputs,
                       poll_interval=poll_interval)  # fmt: skip
    began = time.time()
    runner.run()
    ended = time.time()
    final: Message | None = None
    while not runner.messages.empty():
        final = runner.messages.get_nowait()
    if not isinstance(final, Done) or timed.done_seen is None:
        raise ServiceError(f"the take did not finish: {final}")
    return phases(timed, timed.done_seen, (began, ended), final)


def phases(
    timed: TimedClient,
    done_seen: tuple[float, dict[str, Any]],
    run: tuple[float, float],
    done: Done,
) -> RunnerTiming:
    def span(method: str, tail: str) -> tuple[float, float]:
        hits = [(b, e) for m, p, b, e in timed.calls if m == method and p.endswith(tail)]
        return min(b for b, _ in hits), max(e for _, e in hits)

    check = span("GET", "/v1/health")[0], span("POST", "/v1/jobs/check")[1]
    create = span("POST", "/v1/jobs")
    uploads = span("PUT", "")  # every PUT is an input
    start = span("POST", "/start")
    seen, job = done_seen
    server_done = float(job["updated_at"])
    download = sum(e - b for m, p, b, e in timed.calls if m == "GET" and "/outputs/" in p)
    return RunnerTiming(
        check_s=check[1] - check[0],
        upload_s=uploads[1] - create[0],
        start_s=start[1] - start[0],
        server_s=server_done - start[1],
        poll_s=seen - server_done,
        download_s=download,
        total_s=run[1] - run[0],
        outputs={f: (done.directory / frame_file(f)).read_bytes() for f in done.frames},
    )


class DirectRun:
    """The plain diffusers pipeline on the components the backend's loader gives for `params`."""

    def __init__(self, models_dir: Path, params: dict[str, Any], shot: Shot) -> None:
        import torch
        from diffusers import AnimateDiffVideoToVideoControlNetPipeline, DDIMScheduler

        from ..models.cache import ModelCache, ModelSet
        from ..models.registry import ModelRegistry
        from ..pipelines.stylize import resolve_models
        from ..pipelines.stylize_params import parse_params
        from ..pipelines.stylize_plan import chunk_seed

        self.torch = torch
        self.params = parse_params(params)
        registry = ModelRegistry(models_dir)
        registry.scan()
        checkpoint, motion, nets, _ = resolve_models(self.params, registry)
        loaded = ModelCache(registry).load(
            ModelSet(checkpoint=checkpoint, motion_adapter=motion, controlnets=tuple(nets))
        )
        sd = loaded.pipe
        # AnimateDiff's own recommendation: a linear beta schedule for motion modules.
        scheduler = DDIMScheduler.from_config(
            sd.scheduler.config,
            beta_schedule="linear",
            clip_sample=False,
            timestep_spacing="linspace",
            steps_offset=1,
        )
        self.pipe = AnimateDiffVideoToVideoControlNetPipeline(
            vae=sd.vae,
            text_encoder=sd.text_encoder,
            tokenizer=sd.tokenizer,
            unet=sd.unet,
            motion_adapter=loaded.motion_adapter,
            controlnet=list(loaded.controlnets),
            scheduler=scheduler,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.seed = chunk_seed(self.params.seed, 0)  # the service's seed for the first chunk
        self.shot = shot
        self.video = [f.beauty.astype(np.float32) / 255.0 for f in shot.frames]
        self.controls = conditioning(shot, self.params)

    def __call__(self) -> list[np.ndarray]:
        p = self.params
        out = self.pipe(
            prompt=p.prompt,
            negative_prompt=p.negative_prompt or None,
            video=self.video,
            strength=p.strength,
            height=self.shot.height,
            width=self.shot.width,
            num_inference_steps=p.steps,
            guidance_scale=p.guidance,
            conditioning_frames=self.controls,
            controlnet_conditioning_scale=[n.scale for n in p.controlnets],
            control_guidance_start=[n.start for n in p.controlnets],
            control_guidance_end=[n.end for n in p.controlnets],
            generator=self.torch.Generator("cpu").manual_seed(self.seed),
            output_type="np",
        ).frames
        return [np.asarray(f, np.float32) for f in out[0]]


def conditioning(shot: Shot, params: StylizeParams) -> list[list[np.ndarray]]:
    """One list of control images per ControlNet, from the shot's passes in memory."""
    from ..vision.passes import (
        depth_range,
        depth_to_control,
        lineart_to_control,
        normal_to_control,
    )

    frames = shot.frames
    shot_range = depth_range(f.depth for f in frames)
    by_pass = {
        "depth": [depth_to_control(f.depth, shot_range) for f in frames],
        "normal": [normal_to_control(f.normal, params.world_to_camera) for f in frames],
        "lineart": [lineart_to_control(f.lineart.astype(np.float32) / 255.0) for f in frames],
    }
    return [by_pass[n.pass_] for n in params.controlnets]


class InProcessWorker:
    """The backend's store and worker thread in this process, no HTTP: separates what the
    worker path costs (files, SQLite, decoding, progress) from what HTTP and polling cost."""

    def __init__(self, data: Path, models_dir: Path) -> None:
        from ..models.registry import ModelRegistry
        from ..store import Store
        from ..worker import Worker

        registry = ModelRegistry(models_dir)
        registry.scan()
        self.registry = registry
        self.store = Store(data)
        self.worker = Worker(self.store, "cpu", lambda: registry)
        self.worker.ready.set()
        self.worker.start()

    def run(self, shot: Shot, params: dict[str, Any], poll_interval: float) -> float:
        """Seconds from queueing the job to its last frame on disk (inputs stored before)."""
        from ..jobs import JobSpec
        from ..pipelines import get as get_pipeline
        from ..store import JobState

        pipeline = get_pipeline("stylize")
        clean = pipeline.params_model().model_validate(params).model_dump(mode="json")
        frames = tuple(range(shot.count))
        job, _ = self.store.create_job(
            kind="stylize",
            width=shot.width,
            height=shot.height,
            frames=frames,
            keyframes=(),
            params=clean,
            idempotency_key=None,
            request_hash="bench",
        )
        spec = JobSpec(job.id, "stylize", shot.width, shot.height, frames, (), clean)
        for p, needed in pipeline.required_inputs(spec).items():
            ext = "png" if p in (Pass.BEAUTY, Pass.LINEART) else "exr"
            for f in needed:
                self.store.save_input(job.id, p, f, ext, shot.frames[f].encoded(p))
        self.store.set_params(job.id, pipeline.pin_models(spec, self.registry))
        t0 = time.time()
        self.store.transition(job.id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,))
        self.worker.notify()
        while not (record := self.store.get(job.id)) or not record.state.terminal:
            time.sleep(poll_interval)  # polling the store, as the API would
        if record.state is not JobState.DONE:
            raise RuntimeError(f"in-process job ended {record.state.value}: {record.error}")
        return record.updated_at - t0

    def stop(self) -> None:
        self.worker.stop()
        self.store.close()


@dataclass(frozen=True)
class ServerSideWork:
    """The service's own per-job work besides the diffusers call, timed in this process."""

    decode_s: float  # every uploaded input decoded (PNG / OpenEXR, with its checks)
    condition_s: float  # passes -> ControlNet images
    encode_s: float  # every output encoded as PNG


def server_side_work(
    shot: Shot, params: dict[str, Any], outputs: list[np.ndarray]
) -> ServerSideWork:
    from ..pipelines.stylize_params import parse_params
    from ..vision.imageio import decode
    from ..vision.pixels import to_uint8
    from ..vision.png import encode_png

    parsed = parse_params(params)
    passes = [Pass.BEAUTY, *sorted({n.render_pass for n in parsed.controlnets})]
    payloads = [(p, f.encoded(p)) for f in shot.frames for p in passes]
    t0 = time.perf_counter()
    for p, data in payloads:
        decode(data, max_pixels=1 << 26, expect_size=(shot.width, shot.height), pass_=p)
    t1 = time.perf_counter()
    conditioning(shot, parsed)
    t2 = time.perf_counter()
    for image in outputs:
        encode_png(to_uint8(image))
    t3 = time.perf_counter()
    return ServerSideWork(t1 - t0, t2 - t1, t3 - t2)


@dataclass
class Measured:
    """The three sides' timed runs (interleaved) and what loading cost."""

    request: Request
    inputs: dict[tuple[str, int], Path]  # the files every take uploads
    warm: RunnerTiming
    load_s: float
    service: list[RunnerTiming] = field(default_factory=list)
    worker_s: list[float] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def measure(cfg: OverheadConfig, workdir: Path, service: SharedService, shot: Shot) -> Measured:
    request = job_request(cfg)
    params = request.params()
    inputs = write_inputs(shot, request, workdir / "inputs")
    client = service.get()
    takes = workdir / "takes"
    local: InProcessWorker | None = None
    try:
        warm = run_take(client, request, inputs, takes, cfg.poll_interval)  # loads models
        t0 = time.perf_counter()
        direct = DirectRun(service.models, params, shot)
        measured = Measured(request, inputs, warm, time.perf_counter() - t0)
        direct()  # warm-up: first-call allocations, as the service's throwaway job
        local = InProcessWorker(workdir / "in-process", service.models)
        local.run(shot, params, cfg.poll_interval)  # warm-up: its own model cache
        for _ in range(cfg.repeats):  # interleaved, so a change in machine load hits all three
            measured.service.append(run_take(client, request, inputs, takes, cfg.poll_interval))
            measured.worker_s.append(local.run(shot, params, cfg.poll_interval))
            t0 = time.perf_counter()
            measured.images = direct()
            measured.direct_s.append(time.perf_counter() - t0)
    finally:
        if local is not None:
            local.stop()
    return measured


def run(cfg: OverheadConfig, workdir: Path, service: SharedService) -> dict[str, float | None]:
    import torch

    from ..vision.imageio import decode

    heading("1. service overhead (CPU, tiny models)")
    torch.set_num_threads(cfg.threads)
    note(
        f"job: video2video, {cfg.frames} frames {cfg.width}x{cfg.height}, {cfg.steps} steps at "
        f"strength {cfg.strength}, CFG 7.5, 3 ControlNets (depth, normal, lineart), DDIM, "
        f"seed 7; fusion off; {cfg.threads} torch thread(s) on every side; poll every "
        f"{cfg.poll_interval * 1000:.0f} ms; median of {cfg.repeats} run(s) after one warm-up"
    )
    note(f"load average before: {load_average()}")
    shot = make_shot(cfg.width, cfg.height, cfg.frames)
    m = measure(cfg, workdir, service, shot)
    last = m.service[-1]
    served = [
        decode(last.outputs[f], max_pixels=1 << 26, expect_size=None, pass_=Pass.BEAUTY)
        for f in range(cfg.frames)
    ]
    diff = max(
        float(np.abs(np.rint(s * 255.0) - np.rint(np.clip(i, 0.0, 1.0) * 255.0)).max())
        for s, i in zip(served, m.images, strict=True)
    )
    work = server_side_work(shot, m.request.params(), m.images)
    figures = report(cfg, service, m, work, diff)
    figures.update(print_bytes(m.inputs, shot, cfg.frames))
    note(f"load average after: {load_average()}")
    print_result("overhead", figures)
    return figures


def report(
    cfg: OverheadConfig, service: SharedService, m: Measured, work: ServerSideWork, diff: float
) -> dict[str, float | None]:
    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    def phase(name: str) -> float:
        return median([getattr(r, name) for r in m.service])

    total, plain, worker = phase("total_s"), median(m.direct_s), median(m.worker_s)
    server = phase("server_s")
    glue = worker - plain - work.decode_s - work.condition_s - work.encode_s
    phases = Table(["where the service's time goes", "seconds", "share"])
    for label, seconds in (
        ("diffusers pipeline call (= direct run)", plain),
        ("inputs decoded (timed here)", work.decode_s),
        ("passes -> ControlNet images (timed here)", work.condition_s),
        ("outputs encoded as PNG (timed here)", work.encode_s),
        ("worker glue: queue, files, SQLite, progress", glue),
        ("HTTP server + polling beside the worker", server - worker),
        ("check before rendering: health + models", phase("check_s")),
        ("upload: create + inputs over HTTP (parallel)", phase("upload_s")),
        ("start request", phase("start_s")),
        ("poll latency: done -> seen", phase("poll_s")),
        ("download: outputs over HTTP (summed)", phase("download_s")),
        ("service total", total),
    ):
        phases.add(label, number(seconds), f"{100.0 * seconds / total:.1f} %")
    print()
    phases.print()
    note("worker glue = in-process worker run - direct - the three timed steps; HTTP server =")
    note("the service's start -> done - the in-process worker run (same job, no HTTP)")
    overhead = ratio(total, plain)
    summary = Table(["figure", "value"])
    summary.add("backend start to ready (s)", number(service.start_s, 2))
    summary.add("warm-up take incl. model load (s)", number(m.warm.total_s, 2))
    summary.add("direct: models loaded, pipeline built (s)", number(m.load_s, 2))
    summary.add("service wall time, the add-on's job runner (s)", number(total))
    summary.add("in-process worker, no HTTP (s)", number(worker))
    summary.add("direct wall time (s)", number(plain))
    summary.add("ratio service / direct (aim <= 1.10)", number(overhead))
    summary.add("ratio in-process worker / direct", number(ratio(worker, plain)))
    summary.add("max output difference, service vs direct (0..255)", number(diff, 1))
    print()
    summary.print()
    return {
        "service_s": total,
        "worker_s": worker,
        "direct_s": plain,
        "ratio": overhead,
        "worker_ratio": ratio(worker, plain),
        "check_s": phase("check_s"),
        "upload_s": phase("upload_s"),
        "poll_s": phase("poll_s"),
        "download_s": phase("download_s"),
        "max_diff": diff,
    }


def print_bytes(
    inputs: dict[tuple[str, int], Path], shot: Shot, frames: int
) -> dict[str, float | None]:
    """Bytes uploaded per frame, by pass: what a take costs on the uplink to the backend."""
    per_pass = bytes_per_frame(inputs, frames)
    table = Table(["bytes uploaded per frame", "bytes"])
    for name, size in per_pass.items():
        table.add(name, f"{size:,.0f}")
    total = sum(per_pass.values())
    table.add("total", f"{total:,.0f}")
    print()
    table.print()
    note(f"{shot.width}x{shot.height}: PNG for beauty and line art, OpenEXR for the float passes")
    return {"bytes_per_frame": total, **{f"bytes_{name}": size for name, size in per_pass.items()}}


def load_average() -> str:
    """The 1-minute load average and the core count: timings on a busy machine are noisy."""
    import os

    try:
        one = os.getloadavg()[0]
    except OSError:
        return "n/a"
    return f"{one:.1f} on {os.cpu_count()} core(s)"
