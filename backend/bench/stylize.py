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

Figures are printed (tables, and one `RESULT <part> key=value ...` line each), never asserted.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    speed.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak for the chosen dtype (default: from the built-in table)",
    )


def run(args: argparse.Namespace) -> int:
    chosen = args.part or ["all"]
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
                    from . import stylize_speed

                    stylize_speed.run(stylize_speed.config_from(args))
                elif part == "consistency" and service is not None:
                    from . import stylize_consistency

                    stylize_consistency.run(_consistency_config(args), service)
        finally:
            if service is not None:
                service.stop()
    heading("done")
    note(f"whole run: {time.perf_counter() - started:.1f} s")
    return 0


def _print_environment(args: argparse.Namespace) -> None:
    import diffusers
    import torch

    heading("environment")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    note(f"python {platform.python_version()}, torch {torch.__version__}, diffusers "
         f"{diffusers.__version__}")  # fmt: skip
    note(f"CPU: {platform.processor() or platform.machine()}, {_cores()} core(s); CUDA: {cuda}")
    note(f"parts: {', '.join(args.part or ['all'])}{' (quick sizes)' if args.quick else ''}")


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
