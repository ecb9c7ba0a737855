"""Diffusion in-betweening (method "diffusion"): AnimateDiff with SparseCtrl RGB keyframes.

A key interval (one chunk) is generated as clips of at most `clip_length` frames, the motion
module's window (the SparseCtrl pipeline has no FreeNoise), each with a known picture at both
ends. The SparseCtrl model gets both ends as conditioning frames at their positions in the
clip, and with `hold_keys` their latents are also held on those pictures at each step's noise
level, so the motion module denoises the frames between as the way from one end to the other.

A gap longer than one clip is filled coarse to fine rather than by chaining clips: anchor
frames spread evenly over the gap are generated first, as one clip between the two keys (a
time-lapse of the motion; more levels for very long gaps), then each stretch between
neighbouring anchors is a clip with those anchors at its ends. So every clip has pictures at
both ends, no error builds up along a chain, and neighbouring stretches meet on the same anchor
picture. Anchors are only written when they are requested frames. Frames are written as their
clips are made, and a clip's pictures are kept only while a later clip starts or ends on them:
a long gap never holds all its frames.

Out of GPU memory, a chunk is retried at the next of stylize's memory levels (VAE slicing, then
tiling and clips of half the motion window), and the level is put back when the chunk ends.

Keys pass through untouched, frames outside the keys hold the nearest key, and on twos the odd
frames repeat the frame before, as with the other methods. Each clip's seed is fixed by the
job's seed and the clip's frames, so a frame comes out the same whichever frames are requested
and when a job resumes.

Depth ControlNets from guide passes are not used: diffusers' SparseCtrl pipeline calls exactly
one SparseControlNetModel, and a second ControlNet would need its own denoising loop.

This module stays free of torch: the API validates jobs with it; stylize_runtime (torch,
diffusers) is imported when the first clip runs.
"""

from __future__ import annotations

import bisect
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..jobs import InputError, JobSpec, PipelineError
from ..models.catalogue import KINDS, ModelKind
from ..models.registry import Need
from ..vision.pixels import to_uint8
from .base import Chunk, RunContext
from .diffusion_common import (
    LOAD_STAGE,
    StepHook,
    anchor_seed,
    derived_seed,
    dtype_for,
    generator,
    latent_size_error,
    progress_hook,
    require_models,
    step_callback,
)
from .inbetween_keys import read_keyframe, source_frame
from .inbetween_params import MIN_CLIP, DiffusionParams, InbetweenParams
from .stylize_plan import MEMORY_PLANS

if TYPE_CHECKING:
    from ..models.cache import LoadedModels
    from .stylize_runtime import Runtime

SPARSECTRL_TYPE = "rgb"  # conditions on the keys' colours

# diffusers deprecates passing the keys as a list of 1xHxWx3 arrays, yet its SparseCtrl input
# check refuses every other numpy layout of more than one key: the list stays, its warning goes.
warnings.filterwarnings(
    "ignore", message="Passing `image` as a list of 4d np.ndarray", category=FutureWarning
)


# ---- clips ------------------------------------------------------------------------------------


def plan_clips(
    points: Sequence[int], length: int, wanted: set[int] | frozenset[int]
) -> list[tuple[int, ...]]:
    """The clips that make the `wanted` frames between points[0] and points[-1], in run order.

    `points` are the frames to cover (ascending; both ends known pictures). Every clip has at
    most `length` frames, starts and ends on a known or earlier-generated picture, and has at
    least one wanted frame (or anchor a later clip needs) strictly inside it. `points` is read
    by index only (a range, or the anchors of the level above, computed on demand): keys a
    million frames apart cost the clips that run, never a list of every frame between them.
    """
    if length < MIN_CLIP:
        raise ValueError(f"a clip needs at least {MIN_CLIP} frames, not {length}")
    n = len(points)
    positions = {w: _position(points, w) for w in wanted}
    inside = {w: i for w, i in positions.items() if i is not None and 0 < i < n - 1}
    if not inside:
        return []
    if n <= length:
        return [tuple(points)]
    gaps = n - 1
    segments = -(-gaps // (length - 1))  # ceil: each segment spans at most length-1 gaps
    cuts = _Cuts(gaps, segments)
    stretches: set[int] = set()
    on_anchors: set[int] = set()
    for w, i in inside.items():
        j = bisect.bisect_right(cuts, i) - 1  # cuts[j] <= i < cuts[j + 1]
        if cuts[j] == i:
            on_anchors.add(w)
        else:
            stretches.add(j)
    needed = [tuple(points[k] for k in range(cuts[j], cuts[j + 1] + 1)) for j in sorted(stretches)]
    needed_anchors = {s[e] for s in needed for e in (0, -1)} | on_anchors
    return plan_clips(_Picked(points, cuts), length, needed_anchors) + needed


def _position(points: Sequence[int], frame: int) -> int | None:
    i = bisect.bisect_left(points, frame)
    return i if i < len(points) and points[i] == frame else None


class _Cuts(Sequence[int]):
    """Where `segments` even segments of `gaps` gaps start (and the last one ends)."""

    def __init__(self, gaps: int, segments: int) -> None:
        self.gaps, self.segments = gaps, segments

    def __len__(self) -> int:
        return self.segments + 1

    def __getitem__(self, i: int) -> int:  # type: ignore[override]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return (2 * i * self.gaps + self.segments) // (2 * self.segments)


class _Picked(Sequence[int]):
    """points[cuts[i]] for each i: the anchors of one planning level."""

    def __init__(self, points: Sequence[int], cuts: _Cuts) -> None:
        self.points, self.cuts = points, cuts

    def __len__(self) -> int:
        return len(self.cuts)

    def __getitem__(self, i: int) -> int:  # type: ignore[override]
        return self.points[self.cuts[i]]


def clip_seed(seed: int, clip: Sequence[int]) -> int:
    """A clip's own seed, fixed by the job's seed and the clip's frames."""
    return derived_seed(f"framesmith-inbetween-diffusion:{seed}:{','.join(map(str, clip))}")


# ---- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    output: np.ndarray  # uint8 HxWx3 or HxWx4, the key as written (untouched)
    rgb: np.ndarray  # float32 HxWx3 0..1, what the model sees


def read_key(ctx: RunContext, frame: int) -> Key:
    image = read_keyframe(ctx, frame)
    if image.shape[2] == 4 and float(image[..., 3].min()) < 1.0:
        raise PipelineError(
            f"Keyframe {frame} has transparent pixels; diffusion in-betweening makes opaque "
            "frames. Use method 'flow' for drawings on a transparent background, or flatten "
            "the keys onto a background."
        )
    return Key(to_uint8(image), np.ascontiguousarray(image[..., :3], dtype=np.float32))


def picture_uint8(rgb: np.ndarray, channels: int) -> np.ndarray:
    """A generated float RGB picture as an output frame with the keys' channel count."""
    out = to_uint8(rgb)
    if channels == 4:
        out = np.concatenate([out, np.full_like(out[..., :1], 255)], axis=2)
    return out


class ClipPictures:
    """The pictures clips start and end on (the keys, and frames made by earlier clips), each
    kept only while a later clip still starts or ends on it: a long gap never holds them all."""

    def __init__(self, clips: Sequence[Sequence[int]], keys: dict[int, np.ndarray]) -> None:
        self._uses = Counter(frame for clip in clips for frame in (clip[0], clip[-1]))
        self._keys = set(keys)
        self._pictures = dict(keys)

    def ends(self, clip: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return self._pictures[clip[0]], self._pictures[clip[-1]]

    def made(
        self, clip: Sequence[int], made: Sequence[np.ndarray], wanted: set[int]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(frame, picture) of the wanted frames strictly inside `clip`, from its pictures
        `made` (ends included), keeping those a later clip starts or ends on."""
        for end in (clip[0], clip[-1]):
            self._uses[end] -= 1
            if self._uses[end] <= 0 and end not in self._keys:
                self._pictures.pop(end, None)  # no later clip starts or ends on it
        for frame, image in zip(clip[1:-1], made[1:-1], strict=True):
            if self._uses[frame] > 0:
                self._pictures[frame] = image
            if frame in wanted:
                yield frame, image


ClipFrames = Iterator[tuple[int, np.ndarray]]  # (frame, picture), each as its clip is made


def write_clips(
    ctx: RunContext,
    chunk: Chunk,
    params: InbetweenParams,
    generate: Callable[[int, int, set[int], dict[int, Key]], ClipFrames],
    as_output: Callable[[np.ndarray, int], np.ndarray],
) -> None:
    """One key interval of a generative in-between, whichever engine `generate` runs: frames on
    the keys (and holds of them) are the keys as written; the others are written as their clips
    are made, so a long gap never holds all its pictures. `as_output` makes a generated picture
    an output frame with the keys' channel count."""
    if len(chunk.context) != 2:
        raise PipelineError(f"An in-between chunk reads two keys, not {chunk.context}.")
    k0, k1 = chunk.context
    ctx.check_cancel()
    keys = {k: read_key(ctx, k) for k in (k0, k1)}
    channels = max(k.output.shape[2] for k in keys.values())
    showing: dict[int, list[int]] = {}  # generated picture -> the frames that show it
    for t in chunk.frames:
        if ctx.finished_output(t) is not None:
            continue
        shown = source_frame(t, k0, params.on_twos) if k0 < t < k1 else t
        if shown <= k0 or shown >= k1:
            ctx.write_output(t, keys[k0 if shown <= k0 else k1].output)
        else:
            showing.setdefault(shown, []).append(t)
    if not showing:
        return
    # closed at once however the loop ends: the memory level is put back with it
    with closing(generate(k0, k1, set(showing), keys)) as made:
        for frame, picture in made:
            ctx.check_cancel()
            for t in showing[frame]:
                ctx.write_output(t, as_output(picture, channels))


# ---- the method -------------------------------------------------------------------------------


class DiffusionMethod:
    # base.ShrinksOnOutOfMemory, per job (InbetweenPipeline.memory_levels_for): stylize's
    # MemoryPlans; SparseCtrl decodes a clip at once, so decode_frames has no say here.
    memory_levels = len(MEMORY_PLANS)

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        if problem := latent_size_error(job.width, job.height):
            raise InputError(
                f"Diffusion in-betweening needs keys of a size the model takes: {problem};"
                " render the keys at that size, or use method 'flow'."
            )

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        p = params.diffusion_settings
        needs = [Need(ModelKind.CHECKPOINT, name=p.checkpoint)] if p.checkpoint else []
        if p.motion_adapter:
            needs.append(Need(ModelKind.MOTION_ADAPTER, name=p.motion_adapter))
        if p.sparsectrl:
            needs.append(Need(ModelKind.SPARSECTRL, name=p.sparsectrl))
        lines = list(models.missing_for("inbetween", needs, mode="diffusion"))
        if not lines:
            line = _sparsectrl_type_problem(p, models)
            if line:
                lines.append(line)
        return lines

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        checkpoint, motion, sparse = resolve_models(params.diffusion_settings, models)
        pinned = params.model_dump(mode="json")
        pinned["diffusion"] = params.diffusion_settings.model_dump(mode="json") | {
            "checkpoint": checkpoint,
            "motion_adapter": motion,
            "sparsectrl": sparse,
        }
        return pinned

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        def generate(k0: int, k1: int, wanted: set[int], keys: dict[int, Key]) -> ClipFrames:
            ends = {k: key.rgb for k, key in keys.items()}
            return _generate(ctx, params, k0, k1, wanted, ends)

        write_clips(ctx, chunk, params, generate, picture_uint8)

    def out_of_memory_advice(self, job: JobSpec, params: InbetweenParams) -> str:
        length = params.diffusion_settings.clip_length
        return (
            f"lower the resolution (now {job.width}×{job.height}) or clip_length (now {length}"
            " frames), or close other programs that use the GPU, and run the job again."
        )


# ---- models -----------------------------------------------------------------------------------


def _sparsectrl_candidates(models: Any) -> list[Any]:
    """Installed SparseCtrl models usable on RGB keys: RGB ones first, then unknown types."""
    entries = models.of_kind(ModelKind.SPARSECTRL)
    return [e for e in entries if e.controlnet_type == SPARSECTRL_TYPE] + [
        e for e in entries if e.controlnet_type is None
    ]


def _sparsectrl_type_problem(p: DiffusionParams, models: Any) -> str | None:
    folder = models.root / KINDS[ModelKind.SPARSECTRL].folder
    if p.sparsectrl is not None:
        entry = models.get(p.sparsectrl, ModelKind.SPARSECTRL)
        if entry.controlnet_type in (None, SPARSECTRL_TYPE):
            return None
        return (
            f"SparseCtrl model '{entry.name}' is a {entry.controlnet_type} model; diffusion "
            "in-betweening conditions on the keys' colours and needs an RGB one (such as "
            f"animatediff-sparsectrl-rgb) in {folder}/."
        )
    if _sparsectrl_candidates(models):
        return None
    found = ", ".join(e.name for e in models.of_kind(ModelKind.SPARSECTRL))
    return (
        f"No RGB SparseCtrl model installed (found only {found}): put "
        f"{KINDS[ModelKind.SPARSECTRL].example} in {folder}/."
    )


def resolve_models(p: DiffusionParams, models: Any) -> tuple[str, str, str]:
    """(checkpoint, motion adapter, SparseCtrl) names, defaults filled in.

    Call after missing_models() found nothing: every name resolves then.
    """

    def name(given: str | None, kind: ModelKind) -> str:
        if given is not None:
            return str(models.get(given, kind).name)
        return str(models.of_kind(kind)[0].name)

    sparse = (
        str(models.get(p.sparsectrl, ModelKind.SPARSECTRL).name)
        if p.sparsectrl is not None
        else str(_sparsectrl_candidates(models)[0].name)
    )
    return (
        name(p.checkpoint, ModelKind.CHECKPOINT),
        name(p.motion_adapter, ModelKind.MOTION_ADAPTER),
        sparse,
    )


# ---- running ----------------------------------------------------------------------------------


def _generate(
    ctx: RunContext,
    params: InbetweenParams,
    k0: int,
    k1: int,
    wanted: set[int],
    keys: dict[int, np.ndarray],
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame, picture) of every wanted frame strictly between k0 and k1, each as soon as its
    clip is made (float32 HxWx3 0..1). `keys` holds the two keys' pictures."""
    p = params.diffusion_settings
    models = ctx.models
    require_models(DiffusionMethod().missing_models(ctx.job, params, models))
    ctx.progress(LOAD_STAGE, 0, 1)
    # torch and diffusers: imported by the first clip that runs, loaded with the models
    from ..models.cache import ModelSet
    from .stylize_runtime import memory_scope, runtime_for

    checkpoint, motion, sparse = resolve_models(p, models)
    runtime = runtime_for(ctx.device)
    loaded = runtime.load(
        models,
        ModelSet(
            checkpoint=checkpoint,
            motion_adapter=motion,
            sparsectrl=sparse,
            dtype=dtype_for(ctx.device),
            device=ctx.device,
        ),
    )
    ctx.check_cancel()
    level = getattr(ctx, "memory_level", 0)
    what = f"job {ctx.job.id}, SparseCtrl in-betweens {k0}-{k1}"
    with memory_scope(loaded, level, what) as plan:
        length = max(MIN_CLIP, min(p.clip_length, _window(loaded) // plan.window_divisor))
        clips = plan_clips(range(k0, k1 + 1), length, wanted)
        pictures = ClipPictures(clips, keys)
        for i, clip in enumerate(clips):
            first, last = pictures.ends(clip)
            hook = progress_hook(ctx, i, len(clips))
            made = denoise_clip(
                runtime, loaded, p, ctx.job, clip, {0: first, len(clip) - 1: last}, hook
            )
            yield from pictures.made(clip, made, wanted)


def _window(loaded: LoadedModels) -> int:
    from .stylize_runtime import motion_window  # torch: loaded already, with the models

    window = motion_window(loaded)
    sparse = loaded.sparsectrl
    if sparse is not None:
        window = min(window, int(sparse.config.motion_max_seq_length))
    if window < MIN_CLIP:
        raise PipelineError(
            f"The motion module's window is {window} frames; diffusion in-betweening needs at "
            f"least {MIN_CLIP}."
        )
    return window


def denoise_clip(
    runtime: Runtime,
    loaded: LoadedModels,
    p: DiffusionParams,
    job: JobSpec,
    clip: Sequence[int],
    ends: dict[int, np.ndarray],
    hook: StepHook,
) -> list[np.ndarray]:
    """One clip of len(clip) frames between its two end pictures; float32 HxWx3 0..1 each."""
    import torch  # loaded already, with the models

    from .stylize_runtime import Anchor, make_scheduler, set_free_noise

    pipe = runtime.pipeline(loaded, "sparsectrl")
    pipe.scheduler = make_scheduler(p.scheduler, loaded.pipe.scheduler.config, motion=True)
    set_free_noise(pipe, len(clip), len(clip))  # the shared motion UNet: FreeNoise off
    seed = clip_seed(p.seed, clip)
    anchor = Anchor(pipe, ends, anchor_seed(seed)) if p.hold_keys else None
    positions = sorted(ends)
    # The pipeline VAE-encodes the keys by sampling from the global RNG: seed it, and give the
    # RNG back as it was afterwards.
    device = torch.device(loaded.models.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = pipe(
            prompt=p.prompt,
            negative_prompt=p.negative_prompt or None,
            height=job.height,
            width=job.width,
            num_frames=len(clip),
            num_inference_steps=p.steps,
            guidance_scale=p.guidance,
            # One 1xHxWx3 array per key: the pipeline checks each entry as a batch of one.
            conditioning_frames=[ends[i][None] for i in positions],
            controlnet_frame_indices=positions,
            controlnet_conditioning_scale=float(p.conditioning_scale),
            generator=generator(seed),
            output_type="np",
            callback_on_step_end=step_callback(hook, anchor),
            callback_on_step_end_tensor_inputs=["latents"],
        ).frames
    return [np.asarray(f, np.float32) for f in out[0]]
