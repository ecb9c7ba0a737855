"""Part 3: how steady a stylized shot is, measured with the render's own motion.

A synthetic shot with exact motion (stylize_shot) is stylized through the real service three
ways with the same seed, prompt, steps and ControlNets: video2video with flow-guided latent
fusion on, the same with it off, and the per-frame baseline (img2img + ControlNets, no motion
module). Each result's warping error (vision/consistency.py: every frame against the previous
one warped along the Vector pass, over the pixels visible in both by depth and forward/backward
agreement) is printed, with the render's own error as the floor a perfect stylization reaches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..jobs import Pass
from ..pipelines.stylize_params import StylizeParams
from .stylize_overhead import NETS, load_average
from .stylize_report import Table, heading, note, number, print_result, ratio
from .stylize_service import SharedService, run_job
from .stylize_shot import Shot, make_shot

HAS_FUSION = "temporal_fusion" in StylizeParams.model_fields


@dataclass(frozen=True)
class ConsistencyConfig:
    width: int
    height: int
    frames: int
    steps: int
    threads: int
    strength: float = 0.6
    poll_interval: float = 0.05


@dataclass(frozen=True)
class Variant:
    name: str
    params: dict[str, Any]


def variants(cfg: ConsistencyConfig) -> list[Variant]:
    base: dict[str, Any] = {
        "prompt": "a watercolour painting of a red ball",
        "seed": 7,
        "steps": cfg.steps,
        "strength": cfg.strength,
        "controlnets": [dict(n) for n in NETS],
        "chunk_size": max(2, cfg.frames),
        "overlap": 0,
    }
    found = [Variant("fusion off", base | {"mode": "video2video"})]
    if HAS_FUSION:
        found[0].params["temporal_fusion"] = False
        found.insert(
            0, Variant("fusion on", base | {"mode": "video2video", "temporal_fusion": True})
        )
    found.append(Variant("per-frame baseline", base | {"mode": "per_frame"}))
    return found


def warping(shot: Shot, images: list[np.ndarray]) -> tuple[float, float]:
    """(warping error, fraction of pixels compared) of `images` over the shot's motion."""
    from ..vision.consistency import shot_warping_error

    report = shot_warping_error(
        images, [f.vector for f in shot.frames], [f.depth for f in shot.frames]
    )
    return report.mean, report.visible_fraction


def run(cfg: ConsistencyConfig, service: SharedService) -> dict[str, float | None]:
    from ..vision.imageio import decode

    heading("3. temporal consistency (CPU, tiny models, through the service)")
    note(
        f"shot: a textured ball crossing a textured wall, {cfg.frames} frames "
        f"{cfg.width}x{cfg.height}; video2video / per_frame at strength {cfg.strength}, "
        f"{cfg.steps} steps, 3 ControlNets, seed 7; vector + depth passes uploaded"
    )
    if not HAS_FUSION:
        note("this backend has no temporal_fusion parameter: only fusion off and per-frame run")
    note(f"load average before: {load_average()}")
    shot = make_shot(cfg.width, cfg.height, cfg.frames)
    note(f"motion: {shot.speed} px per frame to the right")
    client = service.get()
    results: dict[str, tuple[float, float, float]] = {}
    for variant in variants(cfg):
        t0 = time.perf_counter()
        timing = run_job(
            client,
            shot,
            variant.params,
            poll_interval=cfg.poll_interval,
            extra=(Pass.VECTOR, Pass.DEPTH),
        )
        seconds = time.perf_counter() - t0
        images = [
            decode(timing.outputs[f], max_pixels=1 << 26, expect_size=None, pass_=Pass.BEAUTY)
            for f in range(shot.count)
        ]
        error, visible = warping(shot, images)
        results[variant.name] = (error, visible, seconds)

    render_error, _ = warping(shot, [f.beauty for f in shot.frames])
    off = results["fusion off"][0]
    per_frame = results["per-frame baseline"][0]
    table = Table(["run", "warping error", "vs fusion off", "vs per-frame", "compared", "job s"])
    table.add("render (input beauty)", number(render_error, 6), "", "", "", "")
    for name, (error, visible, seconds) in results.items():
        table.add(
            name,
            number(error, 6),
            number(ratio(error, off)),
            number(ratio(error, per_frame)),
            f"{100.0 * visible:.0f} %",
            number(seconds, 1),
        )
    print()
    table.print()
    note("warping error: mean squared RGB difference (0..1 scale) between each frame and the")
    note("previous one warped onto it; 'compared' = pixels visible in both frames")
    note("(the first job on a fresh backend, and per-frame, include loading their models)")
    note(f"load average after: {load_average()}")
    on = results["fusion on"][0] if "fusion on" in results else None
    figures: dict[str, float | None] = {
        "fusion_on": on,
        "fusion_off": off,
        "per_frame": per_frame,
        "render": render_error,
        "on_vs_off": ratio(on, off),
        "on_vs_per_frame": ratio(on, per_frame),
        "off_vs_per_frame": ratio(off, per_frame),
    }
    print_result("consistency", figures)
    return figures
