"""`python -m backend bench stylize`: what the service costs, how fast real-size models run, and
how steady the stylized frames are.

Parts (`--part`, default all):
  overhead     CPU, tiny models: one job through the real backend process over HTTP against
               the diffusers pipeline called directly on the same components and inputs
  speed        real-size SD1.5 UNet + ControlNet + AnimateDiff motion module (random weights,
               built from the shipped configs): frames/s, s/step and TFLOP/s, ours against the
               plain diffusers pipeline; 512x512x16 frames, 20 steps on a GPU, reduced on a CPU
  consistency  warping error of a stylized synthetic shot with exact motion: fusion on, off,
               and the per-frame baseline

`--engine wan_vace` times engine wan_vace (the real-size Wan2.1-VACE 1.3B, random weights:
480p windows of 33 and 81 frames in bf16 on a GPU, reduced on a CPU) beside AnimateDiff's speed
part in the same run, and prints both engines side by side: seconds per step, frames per
second, peak memory, TFLOP/s and the share of the device's peak.

Figures are printed (tables, and one `RESULT <part> key=value ...` line each), never asserted.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .stylize_report import heading, note

if TYPE_CHECKING:
    from .stylize_consistency import ConsistencyConfig
    from .stylize_overhead import OverheadConfig
    from .stylize_service import SharedService

PARTS = ("overhead", "speed", "consistency")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part",
        choices=(*PARTS, "all"),
        action="append",
        help="which part to run (repeatable; default all)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="a folder already holding the tiny models (make-tiny-models); default: write them",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available), cpu, cuda, cuda:N; the speed part runs there, the "
        "tiny-model parts always on the CPU",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest sizes: checks the benchmark runs"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1: on a small shared CPU, OpenMP threads waiting on "
        "each other ran 3-4x slower than one; CUDA runs are not affected)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where models and jobs go (default: a temp dir)"
    )
    parser.add_argument(
        "--engine",
        choices=("animatediff", "wan_vace"),
        default="animatediff",
        help="wan_vace: time Wan2.1-VACE beside AnimateDiff in the speed part (the default part "
        "then)",
    )
    speed = parser.add_argument_group("speed part")
    speed.add_argument("--size", type=int, default=None, help="width = height (multiple of 8)")
    speed.add_argument("--frames", type=int, default=None)
    speed.add_argument("--steps", type=int, default=None)
    speed.add_argument(
        "--dtype",
        choices=("auto", "fp16", "bf16", "fp32"),
        default="auto",
        help="auto: fp16 on CUDA, fp32 on a CPU",
    )
    speed.add_argument(
        "--channels-last", action="store_true", help="UNet, ControlNet, VAE in channels_last"
    )
    speed.add_argument("--vae-slicing", action="store_true", help="decode one frame at a time")
    speed.add_argument("--compile", action="store_true", help="torch.compile the motion UNet")
    speed.add_argument("--fusion", action="store_true", help="also time ours with latent fusion")
    speed.add_argument("--wan-size", default=None, help="engine wan_vace: WIDTHxHEIGHT")
    speed.add_argument(
        "--wan-frames",
        type=int,
        action="append",
        help="engine wan_vace: a window length to time, 4k+1 (repeatable)",
    )
    speed.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak for the chosen dtype (default: from the built-in table)",
    )


def run(args: argparse.Namespace) -> int:
    chosen = args.part or (["speed"] if args.engine == "wan_vace" else ["all"])
    parts = PARTS if "all" in chosen else tuple(p for p in PARTS if p in chosen)
    started = time.perf_counter()
    _print_environment(args)
    with tempfile.TemporaryDirectory(prefix="framesmith-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        service: SharedService | None = None
        if "overhead" in parts or "consistency" in parts:
            from .stylize_service import SharedService

            service = SharedService(workdir / "data", _tiny_models(args, workdir), _threads(args))
        try:
            for part in parts:
                if part == "overhead" and service is not None:
                    from . import stylize_overhead

                    stylize_overhead.run(_overhead_config(args), workdir / "overhead", service)
                elif part == "speed":
                    _speed(args)
                elif part == "consistency" and service is not None:
                    from . import stylize_consistency

                    stylize_consistency.run(_consistency_config(args), service)
        finally:
            if service is not None:
                service.stop()
    heading("done")
    note(f"whole run: {time.perf_counter() - started:.1f} s")
    return 0


def _speed(args: argparse.Namespace) -> None:
    """AnimateDiff's speed part; with --engine wan_vace, Wan2.1-VACE's too, then both side by
    side."""
    from . import stylize_speed

    if args.engine != "wan_vace":
        stylize_speed.run(stylize_speed.config_from(args))
        return
    import gc

    from . import stylize_wan_speed

    ad_cfg = stylize_speed.config_from(args)
    memory = stylize_wan_speed.PeakMemory(ad_cfg.device)
    memory.reset()
    animatediff = stylize_speed.run(ad_cfg)
    animatediff_mb = memory.read_mb()
    gc.collect()  # AnimateDiff's models go before Wan's come
    wan = stylize_wan_speed.run(stylize_wan_speed.config_from(args))
    compare_engines(ad_cfg, animatediff, animatediff_mb, wan)


def compare_engines(
    ad_cfg: Any, animatediff: dict[str, Any], animatediff_mb: float | None, wan: list[dict]
) -> None:
    """Both engines side by side (AnimateDiff's peak memory covers its whole part: both
    pipelines, the weights included)."""
    from .stylize_report import Table, number, print_result

    heading("2c. engines side by side")
    table = Table(["engine", "size", "frames", "s/step", "frames/s", "peak MiB", "TFLOP/s",
                   "% of peak"])  # fmt: skip

    def pct(tflops: float, peak: float | None) -> str:
        return number(100.0 * tflops / peak if peak else None, 1)

    peak = animatediff.get("peak_tflops")
    table.add("animatediff", f"{ad_cfg.size}x{ad_cfg.size}", str(ad_cfg.frames),
              number(animatediff["ours_step_s"], 3), number(animatediff["ours_fps"], 3),
              number(animatediff_mb, 0), number(animatediff["ours_tflops"], 3),
              pct(animatediff["ours_tflops"], peak))  # fmt: skip
    for row in wan:
        table.add("wan_vace", f"{row['width']}x{row['height']}", str(row["frames"]),
                  number(row["step_s"], 3), number(row["fps"], 3), number(row["peak_mb"], 0),
                  number(row["tflops"], 3), pct(row["tflops"], row["peak_tflops"]))  # fmt: skip
    print()
    table.print()
    note("AnimateDiff: ControlNet + motion UNet, fp16 on a GPU; Wan2.1-VACE: bf16 transformer,"
         " float32 VAE; both with classifier-free guidance")  # fmt: skip
    print_result("engines", {"animatediff_step_s": animatediff["ours_step_s"],
                             "animatediff_fps": animatediff["ours_fps"],
                             "animatediff_peak_mb": animatediff_mb,
                             **{f"wan_{r['frames']}_step_s": r["step_s"] for r in wan},
                             **{f"wan_{r['frames']}_fps": r["fps"] for r in wan}})  # fmt: skip


def _print_environment(args: argparse.Namespace) -> None:
    import diffusers
    import torch

    heading("environment")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    note(f"python {platform.python_version()}, torch {torch.__version__}, diffusers "
         f"{diffusers.__version__}")  # fmt: skip
    note(f"CPU: {platform.processor() or platform.machine()}, {_cores()} core(s); CUDA: {cuda}")
    parts = args.part or (["speed"] if args.engine == "wan_vace" else ["all"])
    engines = "AnimateDiff and Wan2.1-VACE" if args.engine == "wan_vace" else "AnimateDiff"
    note(f"parts: {', '.join(parts)}{' (quick sizes)' if args.quick else ''}; engines: {engines}")


def _tiny_models(args: argparse.Namespace, workdir: Path) -> Path:
    if args.models is not None:
        heading("tiny models")
        note(f"using {args.models}")
        return args.models.resolve()
    from ..models.tiny import make_tiny_models

    t0 = time.perf_counter()
    make_tiny_models(workdir / "models")
    heading("tiny models")
    note(f"written to {workdir / 'models'} in {time.perf_counter() - t0:.1f} s")
    return workdir / "models"


def _threads(args: argparse.Namespace) -> int:
    return args.threads or 1


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _overhead_config(args: argparse.Namespace) -> OverheadConfig:
    from .stylize_overhead import OverheadConfig

    if args.quick:
        return OverheadConfig(32, 32, 4, 2, 1.0, args.repeats or 1, _threads(args), 0.02)
    return OverheadConfig(64, 64, 16, 20, 0.6, args.repeats or 3, _threads(args), 0.05)


def _consistency_config(args: argparse.Namespace) -> ConsistencyConfig:
    from .stylize_consistency import ConsistencyConfig

    if args.quick:
        return ConsistencyConfig(32, 32, 6, 3, _threads(args))
    return ConsistencyConfig(64, 64, 16, 10, _threads(args))
