"""HTTP routes (v1). Thin: validation and translation only; the work is in store and worker."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import API_VERSION, __version__, pipelines
from .pipelines.base import (
    ANY_SIZE_PASSES,
    FrameRanges,
    InputError,
    JobSpec,
    Pass,
    Pipeline,
    frame_range_error,
    validation_text,
)
from .pipelines.stylize_params import ENGINE_WORKING_SIZE
from .store import (
    DEFAULT_MAX_AWAITING,
    IdempotencyConflict,
    InputsClosed,
    JobRecord,
    JobState,
    Store,
    UnsafePath,
)
from .worker import MAX_PIXELS, Worker

log = logging.getLogger("framesmith.api")

MAX_FRAMES = 100_000
MAX_SIDE = 8192
# A job lists at most this many missing frames per pass by number (missing_inputs); all of them
# as ranges (missing_input_ranges, up to MAX_LISTED_RANGES) and their count.
MAX_LISTED_MISSING = 1000
MAX_LISTED_RANGES = 1000
# GET /v1/jobs answers pages of at most this many bytes of JSON (and at least one job); the
# X-Next-Cursor header names the next page.
PAGE_BYTES = 1024 * 1024
NEXT_CURSOR = "X-Next-Cursor"


@dataclass
class Services:
    store: Store
    worker: Worker
    models_dir: Path
    max_queue: int = 64
    device: str = "cpu"
    max_awaiting: int = DEFAULT_MAX_AWAITING  # jobs waiting for inputs; the idlest expire
    _registry: Any = None
    _scan_lock: threading.Lock = field(default_factory=threading.Lock)

    def models(self, rescan: bool = False) -> Any:
        """The model registry of the last scan; a scan only when asked (rescan) or when none
        has finished yet (a caller then waits for the one in progress, never starts another)."""
        if rescan:
            return self.scan_models()
        registry = self._registry
        if registry is not None:
            return registry
        with self._scan_lock:
            if self._registry is not None:
                return self._registry
        return self.scan_models()

    def models_when_read(self) -> Any:
        """The registry for a path that may not need one (a job start): nothing waits for the
        first scan unless the pipeline actually reads the registry."""
        return self._registry if self._registry is not None else _FirstScan(self)

    def scan_models(self) -> Any:
        """Scan the models folder now (one scan at a time) and serve the result from then on."""
        from .models.registry import ModelRegistry

        with self._scan_lock:
            started = time.monotonic()
            registry = ModelRegistry(self.models_dir).scan()
            self._registry = registry
        log.info(
            "models folder %s scanned in %.2f s: %d model(s), %d refused",
            self.models_dir,
            time.monotonic() - started,
            len(registry.entries),
            len(registry.refused),
        )
        return registry


class _FirstScan:
    """Stands for the registry until the first scan has finished; waits for it when read."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services.models(), name)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="stylize or inbetween")
    frames: list[int] = Field(min_length=1, max_length=MAX_FRAMES, description="output frames")
    width: int = Field(ge=8, le=MAX_SIDE)
    height: int = Field(ge=8, le=MAX_SIDE)
    params: dict[str, Any] = Field(default_factory=dict)
    keyframes: list[int] = Field(default_factory=list, max_length=MAX_FRAMES)


class JobCheck(BaseModel):
    ok: bool = Field(description="true when a job created with this body could start")
    problems: list[str] = Field(description="one sentence per reason it could not, for a person")


class ProgressOut(BaseModel):
    stage: str
    done: int
    total: int
    chunk: int
    chunks: int
    fraction: float


class JobOut(BaseModel):
    id: str
    kind: str
    state: JobState
    progress: ProgressOut
    error: str | None
    finished_frames: list[int]
    frames: list[int]
    keyframes: list[int]
    width: int
    height: int
    params: dict[str, Any]
    missing_inputs: dict[str, list[int]] = Field(
        description=f"per pass, the first {MAX_LISTED_MISSING} frames still to upload"
    )
    missing_input_ranges: dict[str, list[tuple[int, int]]] = Field(
        default_factory=dict,
        description="per pass, the frames still to upload as inclusive [first, last] ranges"
        f" (the first {MAX_LISTED_RANGES} ranges)",
    )
    missing_input_counts: dict[str, int] = Field(
        default_factory=dict, description="per pass, how many frames are still to upload"
    )
    cancel_requested: bool
    created_at: float
    updated_at: float


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Framesmith backend",
        version=__version__,
        redirect_slashes=False,  # a program's mistake gets a 404, not a redirect to guess from
        description="Stylize renders and in-between keyframes for the Framesmith Blender"
        " extension. Every route needs 'Authorization: Bearer <token>'.",
    )
    store = services.store

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _readable(exc.errors())})

    def job_or_404(job_id: str) -> JobRecord:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job with id {job_id!r}")
        return job

    def pipeline_for(kind: str) -> Pipeline:
        try:
            return pipelines.get(kind)
        except LookupError as exc:
            raise HTTPException(400, str(exc)) from exc

    def missing_inputs(job: JobRecord, pipeline: Pipeline | None) -> dict[str, FrameRanges]:
        """Per pass, the required frames not uploaded yet, as ranges (never one number per
        frame between two keys)."""
        if pipeline is None or job.state is not JobState.AWAITING_INPUTS:
            return {}
        have = store.uploaded(job.id)
        out: dict[str, FrameRanges] = {}
        for p, frames in pipeline.required_inputs(job.spec()).items():
            missing = FrameRanges.of(frames).without(have.get(p, set()))
            if missing:
                out[p.value] = missing
        return out

    def job_out(job: JobRecord) -> JobOut:
        loaded = pipelines.load(job.kind)
        missing = missing_inputs(job, loaded.pipeline)
        p = job.progress
        return JobOut(
            id=job.id,
            kind=job.kind,
            state=job.state,
            progress=ProgressOut(
                stage=p.stage,
                done=p.done,
                total=p.total,
                chunk=p.chunk,
                chunks=p.chunks,
                fraction=1.0 if job.state is JobState.DONE else p.fraction,
            ),
            error=job.error,
            finished_frames=store.finished_frames(job.id),
            frames=list(job.frames),
            keyframes=list(job.keyframes),
            width=job.width,
            height=job.height,
            params=job.params,
            missing_inputs={k: _first(v, MAX_LISTED_MISSING) for k, v in missing.items()},
            missing_input_ranges={k: list(v.spans[:MAX_LISTED_RANGES]) for k, v in missing.items()},
            missing_input_counts={k: len(v) for k, v in missing.items()},
            cancel_requested=job.cancel_requested,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )

    def engines() -> dict[str, Any]:
        return {name: {"working_size": size} for name, size in ENGINE_WORKING_SIZE.items()}

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        kinds: dict[str, Any] = {}
        for kind in pipelines.kinds():
            loaded = pipelines.load(kind)
            kinds[kind] = {"available": loaded.pipeline is not None, "error": loaded.error}
        return {
            "api": API_VERSION,
            "version": __version__,
            "device": services.device,
            "pid": os.getpid(),
            "data_dir": str(store.root),
            "pipelines": kinds,
            "engines": engines(),
            "queue": {
                "running": store.count(JobState.RUNNING),
                "queued": store.count(JobState.QUEUED),
                "max_queued": services.max_queue,
            },
        }

    @app.get("/v1/models")
    def models(rescan: bool = False) -> dict[str, Any]:
        """What the last scan of the models folder found (one at start); `rescan=true` scans
        again first, after models were added or removed."""
        listing = services.models(rescan=rescan).to_json()
        listing["engines"] = engines()
        return listing

    def validated(body: JobCreate) -> tuple[Pipeline, JobSpec]:
        """The body's pipeline and job, params cleaned; HTTPException when it cannot be one."""
        pipeline = pipeline_for(body.kind)
        frames = tuple(body.frames)
        keyframes = tuple(body.keyframes)
        for name, values in (("frames", frames), ("keyframes", keyframes)):
            for f in values:
                if (problem := frame_range_error(f, f"{name[:-1]}")) is not None:
                    raise HTTPException(422, problem)
            if list(values) != sorted(set(values)):
                raise HTTPException(422, f"{name} must be ascending without repeats")
        try:
            params = pipeline.params_model().model_validate(body.params)
        except ValidationError as exc:
            raise HTTPException(422, "params: " + validation_text(exc)) from exc
        clean = params.model_dump(mode="json")
        spec = JobSpec("0" * 32, body.kind, body.width, body.height, frames, keyframes, clean)
        try:
            pipeline.check_job(spec)
        except InputError as exc:
            raise HTTPException(422, str(exc)) from exc
        return pipeline, spec

    @app.post("/v1/jobs/check", response_model=JobCheck)
    def check_job(body: JobCreate) -> JobCheck:
        """What POST /v1/jobs and its start would refuse for this body (the models installed
        now included), before anything is rendered or uploaded. Creates nothing."""
        try:
            pipeline, spec = validated(body)
        except HTTPException as exc:
            return JobCheck(ok=False, problems=[str(exc.detail)])
        missing = pipeline.missing_models(spec, services.models())
        if missing:  # maybe installed since the last scan: the user was just told to
            missing = pipeline.missing_models(spec, services.models(rescan=True))
        problems = ["models missing: " + " ".join(missing)] if missing else []
        return JobCheck(ok=not problems, problems=problems)

    @app.post("/v1/jobs", status_code=201, response_model=JobOut)
    def create_job(
        body: JobCreate,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JobOut:
        _, spec = validated(body)
        request_hash = hashlib.sha256(
            json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()
        try:
            job, created = store.create_job(
                kind=body.kind,
                width=body.width,
                height=body.height,
                frames=spec.frames,
                keyframes=spec.keyframes,
                params=dict(spec.params),
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
        except IdempotencyConflict as exc:
            raise HTTPException(
                409, "this Idempotency-Key was already used for a different request"
            ) from exc
        if not created:
            response.status_code = 200
        else:
            store.expire_awaiting(keep=services.max_awaiting)
        return job_out(job)

    @app.put("/v1/jobs/{job_id}/inputs/{pass_name}/{frame}")
    async def upload_input(job_id: str, pass_name: Pass, frame: int, request: Request) -> dict:
        check_frame(frame)
        job = job_or_404(job_id)
        if job.state is not JobState.AWAITING_INPUTS:
            raise HTTPException(409, f"job {job_id} is {job.state.value}; inputs are closed")
        pipeline = pipeline_for(job.kind)
        accepted = pipeline.accepted_inputs(job.spec())
        if pass_name not in accepted:
            names = ", ".join(p.value for p in accepted) or "none"
            raise HTTPException(
                422, f"a {job.kind} job takes no {pass_name.value} pass (it takes: {names})"
            )
        if frame not in accepted[pass_name]:
            raise HTTPException(
                422, f"frame {frame} is not one this job takes a {pass_name.value} pass for"
            )
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
        if not data:
            raise HTTPException(400, "empty body: send the PNG or EXR file's bytes")

        def validate_and_save() -> dict:
            from .vision.imageio import DecodeBusy, decode, label, probe

            try:  # the body's own bytes: no second copy of a large upload
                info = probe(data, what=label(pass_name))  # type: ignore[arg-type]
                decode(
                    data,  # type: ignore[arg-type]
                    max_pixels=MAX_PIXELS,
                    expect_size=None if pass_name in ANY_SIZE_PASSES else (job.width, job.height),
                    pass_=pass_name,
                )
            except DecodeBusy as exc:
                raise HTTPException(429, f"{pass_name.value} frame {frame}: {exc}") from exc
            except InputError as exc:
                raise HTTPException(400, f"{pass_name.value} frame {frame}: {exc}") from exc
            try:
                store.save_input(job_id, pass_name, frame, info.format, data)
            except InputsClosed as exc:
                raise HTTPException(404 if exc.state is None else 409, str(exc)) from exc
            except UnsafePath as exc:
                raise HTTPException(409, str(exc)) from exc
            return {
                "pass": pass_name.value,
                "frame": frame,
                "format": info.format,
                "width": info.width,
                "height": info.height,
                "bytes": len(data),
            }

        return await run_in_threadpool(validate_and_save)

    @app.post("/v1/jobs/{job_id}/start", response_model=JobOut)
    def start_job(job_id: str, response: Response) -> JobOut:
        job = job_or_404(job_id)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            return job_out(job)
        if job.state.terminal:
            raise HTTPException(409, f"job {job_id} is {job.state.value}; create a new job")
        pipeline = pipeline_for(job.kind)
        missing = missing_inputs(job, pipeline)
        if missing:
            job_or_404(job_id)  # deleted meanwhile: its inputs went with it
            listed = "; ".join(f"{p} for frame(s) {_ranges(fs)}" for p, fs in missing.items())
            raise HTTPException(400, f"inputs missing: {listed}")
        models = services.models_when_read()  # never a scan of the models folder in here
        missing_models = pipeline.missing_models(job.spec(), models)
        if missing_models:
            raise HTTPException(400, "models missing: " + " ".join(missing_models))
        pinned = pipeline.pin_models(job.spec(), models)
        if pinned != job.params:
            store.set_params(job_id, pinned)
        if store.count(JobState.QUEUED) >= services.max_queue:
            raise HTTPException(
                429, f"the queue is full ({services.max_queue} jobs); try again when one finishes"
            )
        started = store.transition(
            job_id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,)
        )
        services.worker.notify()
        response.status_code = 202
        return job_out(started or job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}", response_model=JobOut)
    def get_job(job_id: str) -> JobOut:
        return job_out(job_or_404(job_id))

    @app.get(
        "/v1/jobs/{job_id}/outputs/{frame}",
        responses={200: {"content": {"image/png": {}}}},
        response_class=Response,
    )
    def get_output(job_id: str, frame: int) -> Response:
        check_frame(frame)
        job = job_or_404(job_id)
        if frame not in job.frames:
            raise HTTPException(404, f"frame {frame} is not part of job {job_id}")
        data = store.read_output(job_id, frame)
        if data is None:
            if job.state is JobState.FAILED and job.error:
                raise HTTPException(404, f"frame {frame} was not made: the job failed: {job.error}")
            raise HTTPException(
                404, f"frame {frame} is not finished yet (job is {job.state.value})"
            )
        return Response(content=data, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/cancel", response_model=JobOut)
    def cancel_job(job_id: str) -> JobOut:
        job = job_or_404(job_id)
        if job.state.terminal:
            raise HTTPException(
                409, f"job {job_id} is {job.state.value}; a finished job cannot be canceled"
            )
        services.worker.cancel(job_id)
        store.transition(
            job_id, JobState.CANCELED, allowed_from=(JobState.AWAITING_INPUTS, JobState.QUEUED)
        )
        return job_out(job_or_404(job_id))

    @app.get("/v1/jobs", response_model=list[JobOut])
    def list_jobs(
        response: Response,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        state: JobState | None = None,
        cursor: Annotated[int | None, Query(ge=1, description=f"from {NEXT_CURSOR}")] = None,
    ) -> list[JobOut]:
        """Newest first, one page of at most `limit` jobs and about PAGE_BYTES of JSON (at
        least one job). When more follow, the X-Next-Cursor header holds the `cursor` to pass
        for the next page."""
        page: list[JobOut] = []
        size, before, full = 0, cursor, False
        while not full and len(page) < limit:
            batch = store.list(limit=min(8, limit - len(page)), state=state, before=before)
            if not batch:
                break
            for job in batch:
                out = job_out(job)
                size += len(out.model_dump_json())
                if page and size > PAGE_BYTES:
                    full = True
                    break
                page.append(out)
                before = job.seq
        if before is not None and page and store.any_before(before, state):
            response.headers[NEXT_CURSOR] = str(before)
        return page

    @app.delete("/v1/jobs/{job_id}")
    def delete_job(job_id: str) -> dict[str, str]:
        job = job_or_404(job_id)
        if services.worker.current_job == job_id:
            raise HTTPException(409, f"job {job_id} is {job.state.value}; cancel it first")
        # checked and deleted in one step: a start at the same moment wins or loses whole
        was = store.delete(job_id, allowed_from=_DELETABLE)
        if was is None:
            raise HTTPException(404, f"no job with id {job_id!r}")
        if was not in _DELETABLE:
            raise HTTPException(409, f"job {job_id} is {was.value}; cancel it first")
        return {"deleted": job_id}

    return app


_DELETABLE = (JobState.AWAITING_INPUTS, JobState.DONE, JobState.FAILED, JobState.CANCELED)


def check_frame(frame: int) -> None:
    """A frame number in a path: Blender's range or a 422 (never a file name it cannot have)."""
    problem = frame_range_error(frame)
    if problem is not None:
        raise HTTPException(422, problem)


def _first(frames: FrameRanges, count: int) -> list[int]:
    out: list[int] = []
    for f in frames:
        if len(out) >= count:
            break
        out.append(f)
    return out


def _ranges(frames: FrameRanges, shown: int = 12) -> str:
    """'0, 30, 40-99 (62 frames)': at most `shown` ranges, then how many more."""
    spans = frames.spans
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:shown])
    if len(spans) > shown:
        text += f" and {len(spans) - shown} more ranges"
    return text if len(frames) == len(spans) else f"{text} ({len(frames)} frames)"


def _readable(errors: Any) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts)
