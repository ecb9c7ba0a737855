"""`python -m backend bench inbetween`: in-betweening quality on rendered shots, and 1080p speed.

The shots are rendered here, by backend/bench/render_shots.py under Blender's Python (the bpy
module): a camera move, two objects crossing with one hiding the other, large motion, a finely
textured surface. Every 4th frame is kept as a key; the frames between are made by each method
and scored against the true renders (PSNR, SSIM), side by side: flow, render-assisted flow
(method "render", from the Vector and Depth passes), cross-fade, and ffmpeg's motion-compensated
`minterpolate` where ffmpeg is installed. Methods run through the pipeline's own code
(InbetweenPipeline.run_chunk) on inputs decoded as the service decodes uploads; the HTTP layer
is left out so the figures are the method's.

Speed: 1920×1080 in-between frames per second for each method on this CPU (inputs decoded
beforehand; flow estimation is shared by the frames of one key interval and counted in).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..pipelines.base import JobSpec, Pass
from ..pipelines.inbetween import InbetweenPipeline
from ..vision.imageio import decode
from .scores import psnr, ssim

REPO = Path(__file__).resolve().parents[2]
RENDER_SCRIPT = Path(__file__).with_name("render_shots.py")
DEFAULT_BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"
KEY_STEP = 4
METHODS = ("flow", "render", "crossfade")
LABELS = {"flow": "flow", "render": "render-assisted", "crossfade": "cross-fade",
          "minterpolate": "minterpolate"}  # fmt: skip
OCCLUSION_SHOTS = ("occlusion",)
# The aims, in dB of mean PSNR.
AIM_FLOW_OVER_MINTERPOLATE = 1.0
AIM_FLOW_OVER_CROSSFADE = 5.0
AIM_RENDER_OVER_FLOW = 3.0
MAX_PIXELS = 1920 * 1080 * 4
_PASS_FILES = {Pass.KEYFRAME: ("beauty", "png"), Pass.VECTOR: ("vector", "exr"),
               Pass.DEPTH: ("depth", "exr")}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    width: int
    height: int
    frames: int
    samples: int
    speed_frames: int  # frames of the 1080p speed shot (keys at both ends)


DEFAULT = Settings(width=192, height=128, frames=17, samples=8, speed_frames=5)
QUICK = Settings(width=96, height=64, frames=9, samples=4, speed_frames=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small frames, few of them")
    parser.add_argument(
        "--blender-python",
        type=Path,
        default=DEFAULT_BLENDER_PYTHON,
        help="a Python with the bpy module, to render the test shots (default: %(default)s)",
    )
    parser.add_argument("--shots", type=Path, help="keep the rendered shots in this folder")
    parser.add_argument("--no-speed", action="store_true", help="skip the 1080p speed run")
    parser.add_argument("--flow-preset", default="medium", choices=("ultrafast", "fast", "medium"))


# --- the shots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    name: str
    folder: Path
    width: int
    height: int
    frames: tuple[int, ...]

    @classmethod
    def load(cls, folder: Path) -> Shot:
        info = json.loads((folder / "shot.json").read_text())
        return cls(info["shot"], folder, info["width"], info["height"], tuple(info["frames"]))

    def path(self, pass_: Pass, frame: int) -> Path:
        sub, ext = _PASS_FILES[pass_]
        return self.folder / sub / f"{frame:04d}.{ext}"

    def truth(self, frame: int) -> np.ndarray:
        bgr = cv2.imread(str(self.path(Pass.KEYFRAME, frame)), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def keys(self) -> tuple[int, ...]:
        return self.frames[::KEY_STEP]

    def between(self) -> tuple[int, ...]:
        """The frames scored: those strictly between the first and the last key."""
        keys = set(self.keys())
        return tuple(f for f in self.frames if f not in keys and f < self.keys()[-1])


def render_shots(
    blender_python: Path, out: Path, settings: Settings, shots: tuple[str, ...] = ()
) -> list[Shot]:
    """Render with Blender's Python in a subprocess; one Shot per rendered folder."""
    command = [
        str(blender_python),
        str(RENDER_SCRIPT),
        "--out",
        str(out),
        "--width",
        str(settings.width),
        "--height",
        str(settings.height),
        "--frames",
        str(settings.frames),
        "--samples",
        str(settings.samples),
    ]
    for name in shots:
        command += ["--shot", name]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"rendering the test shots failed ({done.returncode}):\n{tail}")
    return [Shot.load(p.parent) for p in sorted(out.glob("*/shot.json"))]


# --- running a method ------------------------------------------------------------------------


@dataclass
class ShotContext:
    """A RunContext over a rendered shot's files, decoded as the service decodes uploads."""

    job: JobSpec
    shot: Shot
    device: str = "cpu"
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    _decoded: dict[tuple[Pass, int], np.ndarray] = field(default_factory=dict)

    @property
    def models(self) -> Any:
        return None

    def has_input(self, pass_: Pass, frame: int) -> bool:
        return pass_ in _PASS_FILES and self.shot.path(pass_, frame).is_file()

    def input(self, pass_: Pass, frame: int) -> np.ndarray:
        key = (pass_, frame)
        if key not in self._decoded:
            self._decoded[key] = decode(
                self.shot.path(pass_, frame).read_bytes(),
                max_pixels=MAX_PIXELS,
                expect_size=(self.job.width, self.job.height),
                pass_=pass_,
            )
        return self._decoded[key]

    def preload(self, pipe: InbetweenPipeline) -> None:
        for pass_, frames in pipe.required_inputs(self.job).items():
            for frame in frames:
                self.input(pass_, frame)

    def finished_output(self, frame: int) -> np.ndarray | None:
        return self.outputs.get(frame)

    def write_output(self, frame: int, image: np.ndarray) -> None:
        self.outputs[frame] = image

    def progress(self, stage: str, done: int, total: int) -> None:
        pass

    def check_cancel(self) -> None:
        pass


@dataclass(frozen=True)
class Result:
    frames: dict[int, np.ndarray]  # uint8 RGB per scored frame
    seconds: float  # wall-clock compute time, inputs already decoded
    cpu_seconds: float  # CPU time of this process's threads (or of ffmpeg's), same span


def run_method(shot: Shot, method: str, flow_preset: str = "medium") -> Result:
    pipe = InbetweenPipeline()
    params = {"method": method, "flow_preset": flow_preset}
    job = JobSpec(f"bench-{shot.name}", "inbetween", shot.width, shot.height,
                  shot.between(), shot.keys(), params)  # fmt: skip
    pipe.check_job(job)
    ctx = ShotContext(job, shot)
    ctx.preload(pipe)
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in pipe.plan(job):
        pipe.run_chunk(ctx, chunk)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Result({f: img[..., :3] for f, img in ctx.outputs.items()}, seconds, cpu)


def run_minterpolate(ffmpeg: str, shot: Shot) -> Result:
    """ffmpeg's motion-compensated interpolation from the keys alone, 4× their frame rate."""
    keys = shot.keys()
    with tempfile.TemporaryDirectory(prefix="framesmith-minterpolate-") as tmp:
        src, dst = Path(tmp) / "keys", Path(tmp) / "out"
        src.mkdir()
        dst.mkdir()
        # The last key twice: minterpolate stops one input frame short of the end.
        for i, key in enumerate((*keys, keys[-1])):
            shutil.copyfile(shot.path(Pass.KEYFRAME, key), src / f"{i:04d}.png")
        vf = f"minterpolate=fps={KEY_STEP}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
        command = [ffmpeg, "-v", "error", "-y", "-framerate", "1", "-i", str(src / "%04d.png"),
                   "-vf", vf, "-start_number", "0", str(dst / "%04d.png")]  # fmt: skip
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True, capture_output=True, timeout=600)
        seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
        frames: dict[int, np.ndarray] = {}
        for f in shot.between():
            path = dst / f"{f - keys[0]:04d}.png"  # output n is at n/4 s: key i at n = 4i
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RuntimeError(f"minterpolate wrote no frame {path.name}")
            frames[f] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return Result(frames, seconds, cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


def score(shot: Shot, result: Result) -> Score:
    frames = shot.between()
    p = [psnr(result.frames[f], shot.truth(f)) for f in frames]
    s = [ssim(result.frames[f], shot.truth(f)) for f in frames]
    return Score(float(np.mean(p)), float(np.mean(s)))


def quality_table(shots: list[Shot], scores: dict[tuple[str, str], Score], methods: list[str]):
    width = 18
    head = f"{'shot':<18}" + "".join(f"{LABELS[m]:>{width}}" for m in methods)
    lines = ["Quality: PSNR dB / SSIM of the in-betweens against the true renders", head]
    for shot in shots:
        row = f"{shot.name:<18}"
        for m in methods:
            sc = scores[(shot.name, m)]
            row += f"{f'{sc.psnr:6.2f} / {sc.ssim:.3f}':>{width}}"
        lines.append(row)
    row = f"{'mean':<18}"
    for m in methods:
        p = np.mean([scores[(s.name, m)].psnr for s in shots])
        q = np.mean([scores[(s.name, m)].ssim for s in shots])
        row += f"{f'{p:6.2f} / {q:.3f}':>{width}}"
    lines.append(row)
    return lines


def aims(shots: list[Shot], scores: dict[tuple[str, str], Score], methods: list[str]):
    def mean(method: str, names: tuple[str, ...] | None = None) -> float:
        chosen = [s.name for s in shots if names is None or s.name in names]
        return float(np.mean([scores[(n, method)].psnr for n in chosen]))

    def verdict(delta: float, aim: float) -> str:
        return f"{delta:+.2f} dB (aim ≥ {aim:+.1f}: {'met' if delta >= aim else 'NOT met'})"

    lines = ["Aims (mean PSNR differences):"]
    flow = mean("flow")
    lines.append(
        f"  flow vs cross-fade:         {verdict(flow - mean('crossfade'), AIM_FLOW_OVER_CROSSFADE)}"
    )
    if "minterpolate" in methods:
        delta = flow - mean("minterpolate")
        lines.append(f"  flow vs minterpolate:       {verdict(delta, AIM_FLOW_OVER_MINTERPOLATE)}")
    else:
        lines.append("  flow vs minterpolate:       ffmpeg not found, minterpolate skipped")
    occluded = [s.name for s in shots if s.name in OCCLUSION_SHOTS]
    if occluded:
        delta = mean("render", OCCLUSION_SHOTS) - mean("flow", OCCLUSION_SHOTS)
        lines.append(f"  render-assisted vs flow on {', '.join(occluded)}: "
                     f"{verdict(delta, AIM_RENDER_OVER_FLOW)}")  # fmt: skip
    delta = mean("render") - flow
    lines.append(f"  render-assisted vs flow, all shots: {delta:+.2f} dB")
    return lines


@contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="framesmith-bench-") as tmp:
        yield Path(tmp)


def speed(blender_python: Path, folder: Path, settings: Settings, ffmpeg: str | None, preset: str):
    """1920×1080 in-between frames per second, on the occlusion shot rendered at that size."""
    size = Settings(1920, 1080, settings.speed_frames, 1, settings.speed_frames)
    (shot,) = render_shots(blender_python, folder / "speed", size, ("occlusion",))
    count = len(shot.between())
    lines = [
        f"Speed: 1920×1080, {count} in-betweens between two keys {KEY_STEP} frames apart "
        "(wall clock; CPU time of all threads beside it: on a busy machine it is the steadier)",
        f"  {'method':<16} {'frames/s':>9} {'ms a frame':>11} {'CPU ms a frame':>15}",
    ]
    results = {m: run_method(shot, m, preset) for m in METHODS}
    if ffmpeg is not None:
        results["minterpolate"] = run_minterpolate(ffmpeg, shot)
    for method, result in results.items():
        lines.append(f"  {LABELS[method]:<16} {count / result.seconds:9.2f} "
                     f"{1000 * result.seconds / count:11.0f} {1000 * result.cpu_seconds / count:15.0f}")  # fmt: skip
    if ffmpeg is None:
        lines.append("  minterpolate: ffmpeg not found, minterpolate skipped")
    else:
        lines.append("  (minterpolate: the whole ffmpeg process, PNG reading and writing included)")
    return lines


def run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    blender_python = Path(args.blender_python)
    if not blender_python.is_file():
        print(
            f"No Python with the bpy module at {blender_python}: the benchmark renders its test "
            "shots with it. Run `make setup` (it creates .venv-blender) or pass "
            "--blender-python PATH.",
            file=sys.stderr,
        )
        return 2
    ffmpeg = shutil.which("ffmpeg")
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"In-between benchmark ({'quick' if args.quick else 'default'}): "
          f"{settings.width}×{settings.height}, {settings.frames} frames per shot, keys every "
          f"{KEY_STEP}th frame; {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}")  # fmt: skip
    with _folder(args.shots) as folder:
        started = time.perf_counter()
        shots = render_shots(blender_python, folder / "quality", settings)
        print(f"rendered {len(shots)} shots in {time.perf_counter() - started:.1f} s")
        methods = list(METHODS) + (["minterpolate"] if ffmpeg else [])
        scores: dict[tuple[str, str], Score] = {}
        for shot in shots:
            for method in methods:
                if method == "minterpolate":
                    result = run_minterpolate(ffmpeg, shot)  # type: ignore[arg-type]
                else:
                    result = run_method(shot, method, args.flow_preset)
                scores[(shot.name, method)] = score(shot, result)
        print()
        print("\n".join(quality_table(shots, scores, methods)))
        print()
        print("\n".join(aims(shots, scores, methods)))
        if not args.no_speed:
            print()
            print("\n".join(speed(blender_python, folder, settings, ffmpeg, args.flow_preset)))
    return 0
