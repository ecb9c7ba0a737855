"""Engine wan_vace's speed: the real-size Wan2.1-VACE 1.3B (random weights) through the backend's
own window call (stylize_wan_runtime: memory plan, cached prompt embeddings, the per-step
progress/cancel hook) on a depth control video, beside AnimateDiff's speed part in the same run.

Per window size: seconds per denoising step (from step-end timestamps, the GPU synchronised),
frames per second of the whole window (VAE encode of the control video, the steps, the decode),
peak memory while it ran, and achieved TFLOP/s against the device's dense bf16 peak. FLOPs are
counted on meta tensors (stylize_wan_arch); the umT5 text encoder runs once per prompt and is
cached, so a window never runs it (its FLOPs are shown apart).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stylize_report import Table, heading, note, number, print_result
from .stylize_shot import make_shot
from .stylize_speed import DTYPES, StepClock

PROMPT = "a watercolour painting of a red ball rolling past a wall"


@dataclass(frozen=True)
class WanSpeedConfig:
    device: str
    width: int
    height: int
    frames: tuple[int, ...]  # window lengths timed (4k+1)
    steps: int
    dtype: str  # bf16, fp16, fp32
    warmup: bool
    threads: int | None = None
    peak_tflops: float | None = None
    guidance: float = 5.0


def config_from(args: argparse.Namespace) -> WanSpeedConfig:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = device.startswith("cuda")
    if gpu:  # the figures: 480p, 33 and 81 frames, bf16
        size, frames, steps = ((416, 240), (9,), 2) if args.quick else ((832, 480), (33, 81), 10)
    else:  # the architecture stays full size; the frames shrink to minutes on a small CPU
        size, frames, steps = ((32, 32), (5,), 1) if args.quick else ((64, 64), (9, 17), 2)
    if args.wan_size:
        size = _size(args.wan_size)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if gpu else "fp32")
    frames = tuple(args.wan_frames) if args.wan_frames else frames
    if any((f - 1) % 4 for f in frames):
        raise SystemExit(f"--wan-frames {frames}: each must be 4k+1 (5, 9, ..., 33, ..., 81)")
    return WanSpeedConfig(
        device=device,
        width=size[0],
        height=size[1],
        frames=frames,
        steps=args.steps or steps,
        dtype=dtype,
        warmup=gpu,
        threads=args.threads,
        peak_tflops=args.peak_tflops,
    )


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--wan-size {text!r}: write WIDTHxHEIGHT, e.g. 832x480") from None
    if width % 16 or height % 16:
        raise SystemExit(f"--wan-size {text}: both sides must be multiples of 16")
    return width, height


class PeakMemory:
    """The peak memory of what runs between reset() and read_mb(): allocated GPU memory on
    CUDA; on a CPU the process's resident high-water mark (weights included), reset through
    /proc/self/clear_refs."""

    def __init__(self, device: str) -> None:
        self.device = device

    def reset(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as out:
                out.write("5")
        except OSError:
            pass  # not Linux: the peak then counts from the process's start

    def read_mb(self) -> float | None:
        import torch

        if self.device.startswith("cuda"):
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


@dataclass(frozen=True)
class WanTiming:
    frames: int
    wall_s: float
    step_s: float
    peak_mb: float | None
    flops: float
    shape: tuple[int, ...]


class WanBench:
    """The 1.3B pipeline with random weights and the backend's runtime around it."""

    def __init__(self, cfg: WanSpeedConfig) -> None:
        import torch

        from ..models.dtypes import resolve_dtype
        from ..pipelines.stylize_wan_runtime import WanRuntime
        from . import stylize_arch, stylize_wan_arch

        self.cfg = cfg
        self.torch = torch
        t0 = time.perf_counter()
        self.pipe = stylize_wan_arch.build_on_meta(resolve_dtype(DTYPES[cfg.dtype]))
        self.flops = {
            f: stylize_wan_arch.count_flops(self.pipe, cfg.width, cfg.height, f, cfg.guidance > 1.0)
            for f in cfg.frames
        }
        t1 = time.perf_counter()
        stylize_arch.materialize([self.pipe.transformer, self.pipe.vae], cfg.device)
        self.pipe.text_encoder.to("cpu")  # where the backend keeps it
        self.phases_s = {"built, FLOPs counted": t1 - t0}
        self.phases_s["weights filled"] = time.perf_counter() - t1
        self.sizes = {
            "transformer": stylize_wan_arch.parameters(self.pipe.transformer),
            "VAE": stylize_wan_arch.parameters(self.pipe.vae),
        }
        self.runtime = WanRuntime(cfg.device)
        cuda = cfg.device.startswith("cuda")
        sync = (lambda: torch.cuda.synchronize(cfg.device)) if cuda else (lambda: None)
        self.clock = StepClock(sync)
        self.memory = PeakMemory(cfg.device)

    def window(self, frames: int, steps: int) -> WanTiming:
        from ..pipelines.stylize_wan_runtime import WanRequest, denoise_window
        from ..pipelines.wan_control import Window
        from ..vision.passes import depth_range, depth_to_control

        cfg = self.cfg
        shot = make_shot(cfg.width, cfg.height, frames)
        shot_range = depth_range(f.depth for f in shot.frames)
        video = [depth_to_control(f.depth, shot_range) for f in shot.frames]
        request = WanRequest(
            prompt=PROMPT,
            negative_prompt="",
            seed=7,
            steps=steps,
            guidance=cfg.guidance,
            conditioning_scale=1.0,
            window=Window(video=video, mask=[1.0] * frames, produced=frames),
            size=(cfg.width, cfg.height),
        )
        self.memory.reset()
        self.clock.reset()
        images = denoise_window(
            self.runtime, self.pipe, request, lambda done, total: self.clock.tick()
        )
        self.clock.sync()
        wall = time.perf_counter() - self.clock.start
        shape = np.asarray(images).shape
        total = self.flops[frames].window(steps)
        return WanTiming(frames, wall, self.clock.step_s(), self.memory.read_mb(), total, shape)


def device_peak(device: str, dtype: str, given: float | None) -> tuple[float | None, str]:
    """(the device's dense peak TFLOP/s for `dtype`, how it was found), or (None, why not)."""
    import torch

    from .stylize_arch import gpu_peak

    if given is not None:
        return given, f"{given:g} TFLOP/s (given with --peak-tflops)"
    if not device.startswith("cuda"):
        return None, "n/a on a CPU (no reliable peak figure; compare TFLOP/s between runs)"
    name = torch.cuda.get_device_name(torch.device(device))
    found = gpu_peak(name) if dtype != "fp32" else None
    if found is None:
        return None, f"n/a for {dtype} on {name}; pass --peak-tflops"
    return found[0], f"{found[0]:g} TFLOP/s dense fp16/bf16 ({name}, table row '{found[1]}')"


def run(cfg: WanSpeedConfig) -> list[dict[str, Any]]:
    """Time a window of each length; one result row each."""
    import torch

    heading(f"2b. engine wan_vace: Wan2.1-VACE 1.3B speed ({cfg.device})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not cfg.device.startswith("cuda"):
        torch.set_num_threads(1)  # as the AnimateDiff part: one thread on a small shared CPU
    note(f"a depth-controlled window, {cfg.width}x{cfg.height}, {', '.join(map(str, cfg.frames))}"
         f" frames, {cfg.steps} steps, CFG {cfg.guidance}, UniPC, {cfg.dtype} (VAE float32), "
         f"SDPA attention; {torch.get_num_threads()} CPU thread(s)")  # fmt: skip
    if not cfg.device.startswith("cuda"):
        note("CPU: reduced frame size and length (480p x 81 frames takes hours here); the "
             "architecture is the full 1.3B")  # fmt: skip
    bench = WanBench(cfg)
    note("parameters: " + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in bench.sizes.items()))
    note("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in bench.phases_s.items()))
    t0 = time.perf_counter()
    bench.window(cfg.frames[0], 1)  # kernels for these shapes, and the prompt's embeddings
    note(f"warm-up (1 step, {cfg.frames[0]} frames; encodes the prompt once): "
         f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    peak_tflops, peak_text = device_peak(cfg.device, cfg.dtype, cfg.peak_tflops)
    table = Table(["frames", "wall s", "frames/s", "s/step", "peak MiB", "TFLOP/s", "% of peak"])
    rows: list[dict[str, Any]] = []
    for frames in cfg.frames:
        if cfg.warmup and frames != cfg.frames[0]:
            bench.window(frames, 1)
        t = bench.window(frames, cfg.steps)
        tflops = t.flops / t.wall_s / 1e12
        pct = 100.0 * tflops / peak_tflops if peak_tflops else None
        table.add(str(frames), number(t.wall_s, 2), number(frames / t.wall_s, 3),
                  number(t.step_s, 3), number(t.peak_mb, 0), number(tflops, 3),
                  number(pct, 1))  # fmt: skip
        rows.append({"engine": "wan_vace", "width": cfg.width, "height": cfg.height,
                     "frames": frames, "steps": cfg.steps, "wall_s": t.wall_s,
                     "fps": frames / t.wall_s, "step_s": t.step_s, "peak_mb": t.peak_mb,
                     "tflops": tflops, "peak_tflops": peak_tflops})  # fmt: skip
    print()
    table.print()
    for frames, flops in bench.flops.items():
        note(f"{frames} frames: {flops.window(cfg.steps) / 1e12:.3f} TFLOP a window = "
             f"{cfg.steps} x {flops.step / 1e12:.3f} (transformer + VACE blocks, both CFG "
             f"branches) + {flops.encode / 1e12:.3f} (VAE encode, x2) + "
             f"{flops.decode / 1e12:.3f} (decode); umT5-XXL once per prompt: "
             f"{flops.text / 1e12:.3f}")  # fmt: skip
    note(f"peak: {peak_text}")
    for row in rows:
        print_result(f"wan_{row['frames']}", row)
    return rows
