"""Part 2: real-size speed, ours against the plain diffusers pipeline on the same components.

Text-to-video with one depth ControlNet and classifier-free guidance: every step runs the
ControlNet and the motion UNet on 2 x frames latents. "Ours" is the backend's own code path
(stylize_runtime.Runtime + denoise_video: scheduler, FreeNoise decision, VAE memory plan, the
per-step progress/cancel hook, optionally latent fusion); "plain" is AnimateDiffControlNetPipeline
built directly on the very same module objects and called with the same inputs and seed.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one denoising step, one VAE
decode of every frame and the text encoder (on meta tensors, before any weight exists); a run's
FLOPs = steps x step + decode + text. Achieved TFLOP/s = that / wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stylize_report import Table, heading, note, number, print_result, ratio
from .stylize_shot import make_shot

PROMPT = "a watercolour painting of a red ball rolling past a wall"
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class SpeedConfig:
    device: str
    size: int
    frames: int
    steps: int
    dtype: str  # fp16, bf16, fp32
    repeats: int
    warmup: bool
    channels_last: bool = False
    vae_slicing: bool = False
    compile: bool = False
    fusion: bool = False
    threads: int | None = None
    peak_tflops: float | None = None
    guidance: float = 7.5


def config_from(args: argparse.Namespace) -> SpeedConfig:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch build sees no CUDA device")
    gpu = device.startswith("cuda")
    if gpu:  # the figures: 512x512, 16 frames, 20 steps
        size, frames, steps, repeats = (256, 8, 4, 1) if args.quick else (512, 16, 20, 2)
    else:  # a couple of minutes on a small CPU; the architectures stay full size
        size, frames, steps, repeats = (64, 2, 1, 1) if args.quick else (64, 4, 2, 2)
    dtype = args.dtype if args.dtype != "auto" else ("fp16" if gpu else "fp32")
    size = args.size or size
    if size % 8:
        raise SystemExit(f"--size {size}: use a multiple of 8")
    return SpeedConfig(
        device=device,
        size=size,
        frames=args.frames or frames,
        steps=args.steps or steps,
        dtype=dtype,
        repeats=args.repeats or repeats,
        warmup=gpu or args.compile,
        channels_last=args.channels_last,
        vae_slicing=args.vae_slicing,
        compile=args.compile,
        fusion=args.fusion,
        threads=args.threads,
        peak_tflops=args.peak_tflops,
    )


@dataclass(frozen=True)
class Timing:
    wall_s: float
    step_s: float  # denoising step, from step-end timestamps
    images: list[np.ndarray]


class StepClock:
    """Timestamps at the end of every denoising step (synchronising the GPU first)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.start = 0.0
        self.ends: list[float] = []

    def reset(self) -> None:
        self.sync()
        self.start = time.perf_counter()
        self.ends = []

    def tick(self) -> None:
        self.sync()
        self.ends.append(time.perf_counter())

    def step_s(self) -> float:
        if len(self.ends) >= 2:
            return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)
        return self.ends[0] - self.start if self.ends else float("nan")


class Bench:
    """The model set (real size, random weights), our runtime and the plain pipeline on it."""

    def __init__(self, cfg: SpeedConfig) -> None:
        import torch
        from diffusers import AnimateDiffControlNetPipeline

        from ..models.dtypes import resolve_dtype
        from ..pipelines.stylize_runtime import Runtime, make_scheduler
        from . import stylize_arch

        self.cfg = cfg
        self.torch = torch
        dtype = resolve_dtype(DTYPES[cfg.dtype])
        t0 = time.perf_counter()
        self.loaded = stylize_arch.build_on_meta(dtype, cfg.device)
        self.runtime = Runtime()
        with torch.device("meta"):  # the runtime builds its motion UNet: on meta as well
            ours = self.runtime.pipeline(self.loaded, "text2video")
        self.motion_unet = ours.unet
        t1 = time.perf_counter()
        self.flops = stylize_arch.count_flops(
            self.loaded, self.motion_unet, cfg.size, cfg.frames, cfg.guidance > 1.0
        )
        t2 = time.perf_counter()
        sd = self.loaded.pipe
        controlnet = self.loaded.controlnets[0]
        running = [self.motion_unet, controlnet, sd.vae, sd.text_encoder]
        stylize_arch.materialize(running, cfg.device)
        self.phases_s = {"built": t1 - t0, "FLOPs counted": t2 - t1}
        self.phases_s["weights filled"] = time.perf_counter() - t2
        self.sizes = {
            "motion UNet": stylize_arch.parameters(self.motion_unet),
            "ControlNet": stylize_arch.parameters(controlnet),
            "VAE": stylize_arch.parameters(sd.vae),
            "text encoder": stylize_arch.parameters(sd.text_encoder),
        }
        if cfg.channels_last:
            for module in (self.motion_unet, controlnet, sd.vae):
                module.to(memory_format=torch.channels_last)
        unet: Any = self.motion_unet
        if cfg.compile:
            unet = torch.compile(self.motion_unet)
            ours.unet = unet
        self.plain = AnimateDiffControlNetPipeline(
            vae=sd.vae,
            text_encoder=sd.text_encoder,
            tokenizer=sd.tokenizer,
            unet=unet,
            motion_adapter=self.loaded.motion_adapter,
            controlnet=controlnet,
            scheduler=make_scheduler("ddim", sd.scheduler.config, motion=True),
        )
        self.plain.set_progress_bar_config(disable=True)
        shot = make_shot(cfg.size, cfg.size, cfg.frames)
        self.shot = shot
        from ..vision.passes import depth_range, depth_to_control

        shot_range = depth_range(f.depth for f in shot.frames)
        self.controls = [depth_to_control(f.depth, shot_range) for f in shot.frames]
        cuda = cfg.device.startswith("cuda")
        device = cfg.device
        self.clock = StepClock((lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None))

    def ours(self, steps: int, fusion: bool = False) -> Timing:
        from ..pipelines.stylize_params import StylizeParams
        from ..pipelines.stylize_runtime import Request, denoise_video

        fields = StylizeParams.model_fields
        extra: dict[str, Any] = {}
        if "temporal_fusion" in fields:
            extra["temporal_fusion"] = fusion
        params = StylizeParams(
            prompt=PROMPT,
            seed=7,
            steps=steps,
            guidance=self.cfg.guidance,
            mode="text2video",
            scheduler="ddim",
            controlnets=[{"pass": "depth"}],
            chunk_size=max(2, self.cfg.frames),
            overlap=0,
            **extra,
        )
        request: dict[str, Any] = {
            "params": params,
            "width": self.cfg.size,
            "height": self.cfg.size,
            "seed": 7,
            "beauty": None,
            "controls": [self.controls],
        }
        names = {f.name for f in dataclasses.fields(Request)}
        if "memory_level" in names:
            request["memory_level"] = 1 if self.cfg.vae_slicing else 0
        if fusion and "motion" in names:
            from ..pipelines.stylize_fusion import ChunkMotion
            from ..vision.consistency import FrameMotion

            motions = [FrameMotion.from_passes(f.vector, f.depth) for f in self.shot.frames]
            request["motion"] = ChunkMotion.from_frames(motions)
        self.clock.reset()
        images = denoise_video(
            self.runtime, self.loaded, Request(**request), lambda done, total: self.clock.tick()
        )
        self.clock.sync()
        return Timing(time.perf_counter() - self.clock.start, self.clock.step_s(), images)

    def plain_run(self, steps: int) -> Timing:
        vae = self.plain.vae
        (vae.enable_slicing if self.cfg.vae_slicing else vae.disable_slicing)()
        vae.disable_tiling()

        def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self.clock.tick()
            return {}

        self.clock.reset()
        out = self.plain(
            prompt=PROMPT,
            num_frames=self.cfg.frames,
            height=self.cfg.size,
            width=self.cfg.size,
            num_inference_steps=steps,
            guidance_scale=self.cfg.guidance,
            conditioning_frames=self.controls,
            generator=self.torch.Generator("cpu").manual_seed(7),
            output_type="np",
            decode_chunk_size=4 if self.cfg.vae_slicing else 16,
            callback_on_step_end=on_step_end,
        ).frames
        self.clock.sync()
        images = [np.asarray(f, np.float32) for f in out[0]]
        return Timing(time.perf_counter() - self.clock.start, self.clock.step_s(), images)


def _peak(cfg: SpeedConfig) -> tuple[float | None, str]:
    import torch

    from .stylize_arch import gpu_peak

    if cfg.peak_tflops is not None:
        return cfg.peak_tflops, f"{cfg.peak_tflops:g} TFLOP/s (given with --peak-tflops)"
    if not cfg.device.startswith("cuda"):
        return None, "n/a on a CPU (no reliable peak figure; compare TFLOP/s between runs)"
    name = torch.cuda.get_device_name(torch.device(cfg.device))
    if cfg.dtype == "fp32":
        return None, f"n/a for fp32 on {name} (the table holds fp16/bf16 tensor-core peaks)"
    found = gpu_peak(name)
    if found is None:
        return None, f"n/a: {name} is not in the table; pass --peak-tflops"
    peak, row = found
    return peak, f"{peak:g} TFLOP/s dense fp16/bf16 ({name}, table row '{row}')"


def run(cfg: SpeedConfig) -> dict[str, float | None]:
    import torch

    from .stylize_arch import GPU_PEAKS

    heading(f"2. real-size speed ({cfg.device})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not cfg.device.startswith("cuda"):
        # On a small shared CPU, OpenMP threads that wait on each other ran 3-4x slower than
        # one thread (measured on the 2-core CI box); --threads overrides.
        torch.set_num_threads(1)
    flags = [
        name
        for name, on in (
            ("channels_last", cfg.channels_last),
            ("VAE slicing", cfg.vae_slicing),
            ("torch.compile", cfg.compile),
        )
        if on
    ]
    note(
        f"text2video, {cfg.size}x{cfg.size}, {cfg.frames} frames, {cfg.steps} steps, CFG "
        f"{cfg.guidance}, 1 depth ControlNet, DDIM, {cfg.dtype}, SDPA attention; flags: "
        f"{', '.join(flags) or 'none'}; {torch.get_num_threads()} CPU thread(s)"
    )
    if not cfg.device.startswith("cuda"):
        note("CPU: reduced size (the issue's 512x512x16x20 takes hours here); float32")
    bench = Bench(cfg)
    note("parameters: " + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in bench.sizes.items()))
    note("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in bench.phases_s.items())
         + " (built and counted on the meta device; only the running modules get memory)")  # fmt: skip
    t0 = time.perf_counter()
    if cfg.warmup:
        bench.ours(min(2, cfg.steps))
        bench.plain_run(min(2, cfg.steps))
        what = f"2 steps each{', compiling' if cfg.compile else ''}"
    else:  # one step: kernels for these shapes prepared once, for both (same modules)
        bench.plain_run(1)
        what = "1 step of the plain pipeline"
    note(f"warm-up ({what}): {time.perf_counter() - t0:.1f} s")
    runs: dict[str, list[Timing]] = {"ours": [], "plain diffusers": []}
    if cfg.fusion:
        runs["ours + latent fusion"] = []
    for r in range(cfg.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))  # alternate: fair to both
        for name in order:
            if name == "ours":
                runs[name].append(bench.ours(cfg.steps))
            elif name == "plain diffusers":
                runs[name].append(bench.plain_run(cfg.steps))
            else:
                runs[name].append(bench.ours(cfg.steps, fusion=True))

    flops = bench.flops.total(cfg.steps)
    peak, peak_text = _peak(cfg)
    table = Table(["pipeline", "wall s", "frames/s", "s/step", "TFLOP/s", "% of peak"])
    figures: dict[str, float | None] = {}
    best: dict[str, Timing] = {}
    for name, timings in runs.items():
        timing = min(timings, key=lambda t: t.wall_s)
        best[name] = timing
        tflops = flops / timing.wall_s / 1e12
        table.add(
            name,
            number(timing.wall_s, 2),
            number(cfg.frames / timing.wall_s, 3),
            number(timing.step_s, 3),
            number(tflops, 3),
            number(100.0 * tflops / peak if peak else None, 1),
        )
    print()
    table.print()
    ours, plain = best["ours"], best["plain diffusers"]
    same = max(float(np.abs(a - b).max()) for a, b in zip(ours.images, plain.images, strict=True))
    note(f"best of {cfg.repeats} run(s) each; s/step from step-end timestamps (GPU synchronised)")
    note(f"FLOPs per run: {flops / 1e12:.3f} TFLOP = {cfg.steps} x {bench.flops.step / 1e12:.3f} "
         f"(ControlNet + motion UNet, CFG batch) + {bench.flops.decode / 1e12:.3f} (VAE decode) "
         f"+ {bench.flops.text / 1e12:.3f} (text encoder); FlopCounterMode on meta tensors")  # fmt: skip
    per_sample = bench.flops.step / (2 * cfg.frames if cfg.guidance > 1.0 else cfg.frames)
    at_512 = per_sample * (512 / cfg.size) ** 2
    note(f"per sample and step: {per_sample / 1e12:.4f} TFLOP here, ~{at_512 / 1e12:.2f} scaled "
         "to 512x512 (published anchors: UNet 0.8 + ControlNet 0.28 + motion 0.31)")  # fmt: skip
    note(f"peak: {peak_text}")
    if peak is None and cfg.device.startswith("cuda"):
        note("known peaks: " + ", ".join(f"{k} {v:g}" for k, v in GPU_PEAKS))
    note(f"ours vs plain, largest pixel difference (0..1): {same:.2e} (same seed, same modules)")
    figures = {
        "size": cfg.size,
        "frames": cfg.frames,
        "steps": cfg.steps,
        "ours_s": ours.wall_s,
        "plain_s": plain.wall_s,
        "ratio": ratio(ours.wall_s, plain.wall_s),
        "ours_fps": cfg.frames / ours.wall_s,
        "plain_fps": cfg.frames / plain.wall_s,
        "ours_step_s": ours.step_s,
        "plain_step_s": plain.step_s,
        "ours_tflops": flops / ours.wall_s / 1e12,
        "plain_tflops": flops / plain.wall_s / 1e12,
        "peak_tflops": peak,
    }
    if "ours + latent fusion" in best:
        figures["fusion_s"] = best["ours + latent fusion"].wall_s
    print_result("speed", figures)
    return figures
