"""`python -m backend bench inbetween`: in-betweening quality on rendered shots, and 1080p speed.

The shots are rendered here, by backend/bench/render_shots.py under Blender's Python (the bpy
module): a camera move, objects crossing and hiding each other (two shots), large motion, a
finely textured surface, a camera orbiting textured objects, a small fast object, large
rotation; and line art drawn by backend/bench/lineart_shots.py (a walking stick figure, arcs,
hair-like strands, each on white and on transparent film). Every 4th frame is kept as a key;
the frames between are made by each method and scored against the true frames (PSNR, SSIM),
side by side: flow, render-assisted flow (method "render", from the Vector and Depth passes,
rendered shots only), cross-fade, and ffmpeg's motion-compensated `minterpolate` where ffmpeg
is installed. RGBA shots are scored composited over mid grey (colour and alpha together);
minterpolate, which has no alpha, gets the keys already composited. Line-art shots also count
connected stroke pieces and the share of the true ink drawn dark (scores.py). Methods run
through the pipeline's own code (InbetweenPipeline.run_chunk) on inputs decoded as the service
decodes uploads; the HTTP layer is left out so the figures are the method's.

Speed: 1920×1080 in-between frames per second for each method on this CPU, on a render and a
drawing with three keys (inputs decoded beforehand; motion estimation is shared by the frames
of one key interval and counted in).
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

from ..jobs import JobSpec, Pass
from ..pipelines.inbetween import InbetweenPipeline
from ..vision.imageio import decode
from . import lineart_shots
from .lineart_shots import write_shots
from .scores import ink_kept, over_grey, psnr, ssim, stroke_pieces

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


DEFAULT = Settings(width=192, height=128, frames=17, samples=8, speed_frames=9)
# The aim for line art: pieces in an in-between ≤ pieces in its keys + this.
AIM_EXTRA_PIECES = 1
QUICK = Settings(width=96, height=64, frames=9, samples=4, speed_frames=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small frames, few of them")
    parser.add_argument(
        "--blender-python",
        type=Path,
        default=DEFAULT_BLENDER_PYTHON,
        help="a Python with the bpy module, to render the test shots (default: %(default)s)",
    )
    parser.add_argument(
        "--shots", type=Path, help="keep the shots in this folder (reused when there at this size)"
    )
    parser.add_argument("--shot", action="append", help="score only this shot (repeatable)")
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
    film: bool = False  # RGBA keys (transparent film)
    lineart: bool = False

    @classmethod
    def load(cls, folder: Path) -> Shot:
        info = json.loads((folder / "shot.json").read_text())
        return cls(info["shot"], folder, info["width"], info["height"], tuple(info["frames"]),
                   info.get("film", False), info.get("lineart", False))  # fmt: skip

    @property
    def guided(self) -> bool:
        """Rendered with Vector and Depth passes (render-assisted can run on it)."""
        return self.path(Pass.VECTOR, self.frames[0]).is_file()

    def path(self, pass_: Pass, frame: int) -> Path:
        sub, ext = _PASS_FILES[pass_]
        return self.folder / sub / f"{frame:04d}.{ext}"

    def truth(self, frame: int) -> np.ndarray:
        """uint8 RGB, or RGBA for film."""
        path = str(self.path(Pass.KEYFRAME, frame))
        if self.film:
            return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

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
    frames: dict[int, np.ndarray]  # uint8 RGB (RGBA for film) per scored frame
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
    return Result(dict(ctx.outputs), seconds, cpu)


def run_minterpolate(ffmpeg: str, shot: Shot) -> Result:
    """ffmpeg's motion-compensated interpolation from the keys alone, 4× their frame rate."""
    keys = shot.keys()
    with tempfile.TemporaryDirectory(prefix="framesmith-minterpolate-") as tmp:
        src, dst = Path(tmp) / "keys", Path(tmp) / "out"
        src.mkdir()
        dst.mkdir()
        # The last key twice: minterpolate stops one input frame short of the end.
        for i, key in enumerate((*keys, keys[-1])):
            if shot.film:  # no alpha in minterpolate: it gets the keys as they are shown
                shown = cv2.cvtColor(over_grey(shot.truth(key)), cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(src / f"{i:04d}.png"), shown)
            else:
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
    pieces: float = 0.0  # line art: mean connected stroke pieces per in-between
    extra_pieces: int = 0  # line art: worst in-between's pieces minus its keys' (larger) count
    ink: float = 0.0  # line art: mean share of the true strokes drawn dark (scores.ink_kept)


def score(shot: Shot, result: Result) -> Score:
    frames = shot.between()
    p = [psnr(over_grey(result.frames[f]), over_grey(shot.truth(f))) for f in frames]
    s = [ssim(over_grey(result.frames[f]), over_grey(shot.truth(f))) for f in frames]
    if not shot.lineart:
        return Score(float(np.mean(p)), float(np.mean(s)))
    keys = shot.keys()
    pieces, extra = [], []
    ink = float(np.mean([ink_kept(result.frames[f], shot.truth(f)) for f in frames]))
    for f in frames:
        i = min(max(np.searchsorted(keys, f) - 1, 0), len(keys) - 2)
        near = max(stroke_pieces(shot.truth(keys[i])), stroke_pieces(shot.truth(keys[i + 1])))
        pieces.append(stroke_pieces(result.frames[f]))
        extra.append(pieces[-1] - near)
    return Score(float(np.mean(p)), float(np.mean(s)), float(np.mean(pieces)), max(extra), ink)


Scores = dict[tuple[str, str], Score]


def _mean(scores: Scores, shots: list[Shot], method: str, field_: str = "psnr") -> float | None:
    values = [
        getattr(scores[(s.name, method)], field_) for s in shots if (s.name, method) in scores
    ]
    return float(np.mean(values)) if values else None


def _cell(p: float | None, q: float | None, width: int) -> str:
    return f"{'—':>{width}}" if p is None or q is None else f"{f'{p:6.2f} / {q:.3f}':>{width}}"


def quality_table(shots: list[Shot], scores: Scores, methods: list[str]) -> list[str]:
    width = 18
    head = f"{'shot':<22}" + "".join(f"{LABELS[m]:>{width}}" for m in methods)
    lines = ["Quality: PSNR dB / SSIM of the in-betweens against the true frames", head]
    groups = (("mean, rendered", [s for s in shots if not s.lineart]),
              ("mean, line art", [s for s in shots if s.lineart]), ("mean, all", shots))  # fmt: skip
    for shot in shots:
        row = f"{shot.name:<22}"
        for m in methods:
            sc = scores.get((shot.name, m))
            row += _cell(sc and sc.psnr, sc and sc.ssim, width)
        lines.append(row)
    for label, group in groups:
        if group:
            row = f"{label:<22}"
            for m in methods:
                row += _cell(_mean(scores, group, m), _mean(scores, group, m, "ssim"), width)
            lines.append(row)
    return lines


def pieces_table(shots: list[Shot], scores: Scores, methods: list[str]) -> list[str]:
    drawn = [s for s in shots if s.lineart]
    methods = [m for m in methods if m != "render"]
    if not drawn:
        return []
    width = 18
    lines = ["Line art: connected stroke pieces per in-between, mean (worst in-between's excess "
             "over its keys), share of the true ink drawn dark", f"{'shot':<22}{'keys':>6}" + "".join(f"{LABELS[m]:>{width}}" for m in methods)]  # fmt: skip
    for shot in drawn:
        key_frames = shot.keys()
        keys = np.mean([stroke_pieces(shot.truth(k)) for k in key_frames])
        row = f"{shot.name:<22}{keys:6.1f}"
        for m in methods:
            sc = scores[(shot.name, m)]
            row += f"{f'{sc.pieces:4.1f} ({sc.extra_pieces:+d}) {sc.ink:4.0%}':>{width}}"
        lines.append(row)
    return lines


def _verdict(delta: float, aim: float) -> str:
    return f"{delta:+.2f} dB (aim ≥ {aim:+.1f}: {'met' if delta >= aim else 'NOT met'})"


def aims(shots: list[Shot], scores: Scores, methods: list[str]) -> list[str]:
    rendered = [s for s in shots if not s.lineart]
    drawn = [s for s in shots if s.lineart]
    lines = ["Aims (mean PSNR differences):"]
    for label, group in (("rendered", rendered), ("line art", drawn)):
        if not group:
            continue
        flow = _mean(scores, group, "flow") or 0.0
        delta = flow - (_mean(scores, group, "crossfade") or 0.0)
        lines.append(f"  {label}: flow vs cross-fade {delta:+.2f} dB")
        below = [s.name for s in group
                 if scores[(s.name, "flow")].psnr < scores[(s.name, "crossfade")].psnr]  # fmt: skip
        lines.append(
            f"  {label}: shots where flow is below cross-fade: {', '.join(below) or 'none'}"
        )
        if "minterpolate" in methods:
            delta = flow - (_mean(scores, group, "minterpolate") or 0.0)
            aim = AIM_FLOW_OVER_MINTERPOLATE if group is rendered else 0.0
            lines.append(f"  {label}: flow vs minterpolate {_verdict(delta, aim)}")
        else:
            lines.append(f"  {label}: ffmpeg not found, minterpolate skipped")
    if drawn:
        worst = max(scores[(s.name, "flow")].extra_pieces for s in drawn)
        verdict = "met" if worst <= AIM_EXTRA_PIECES else "NOT met"
        lines.append(f"  line art: flow's worst extra stroke pieces over the keys {worst:+d} "
                     f"(aim ≤ +{AIM_EXTRA_PIECES}: {verdict})")  # fmt: skip
    guided = [s for s in shots if s.guided]
    occluded = [s for s in guided if s.name in OCCLUSION_SHOTS]
    if occluded:
        delta = (_mean(scores, occluded, "render") or 0.0) - (
            _mean(scores, occluded, "flow") or 0.0
        )
        lines.append(f"  render-assisted vs flow on {', '.join(s.name for s in occluded)}: "
                     f"{_verdict(delta, AIM_RENDER_OVER_FLOW)}")  # fmt: skip
    if guided:
        delta = (_mean(scores, guided, "render") or 0.0) - (_mean(scores, guided, "flow") or 0.0)
        lines.append(f"  render-assisted vs flow, rendered shots: {delta:+.2f} dB")
    return lines


@contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="framesmith-bench-") as tmp:
        yield Path(tmp)


SPEED_SHOTS = ("occlusion", "lineart_figure_film")  # a render, and a drawing on film


def _speed_shots(blender_python: Path, folder: Path, frames: int) -> list[Shot]:
    size = Settings(1920, 1080, frames, 1, frames)
    found = {p.parent.name: Shot.load(p.parent) for p in folder.glob("*/shot.json")}
    if all(n in found and len(found[n].frames) == frames for n in SPEED_SHOTS):
        return [found[n] for n in SPEED_SHOTS]
    (rendered,) = render_shots(blender_python, folder, size, (SPEED_SHOTS[0],))
    lineart_shots.write_shot(folder, SPEED_SHOTS[1], 1920, 1080, frames)
    return [rendered, Shot.load(folder / SPEED_SHOTS[1])]


def speed(blender_python: Path, folder: Path, settings: Settings, ffmpeg: str | None, preset: str):
    """1920×1080 in-between frames per second, on a render and a drawing at that size."""
    shots = _speed_shots(blender_python, folder / "speed", settings.speed_frames)
    lines = [
        f"Speed: 1920×1080, keys {KEY_STEP} frames apart, {settings.speed_frames} frames "
        "(wall clock; CPU time of all threads beside it: on a busy machine it is the steadier)",
        f"  {'shot':<20} {'method':<16} {'frames/s':>9} {'ms a frame':>11} {'CPU ms a frame':>15}",
    ]
    for shot in shots:
        count = len(shot.between())
        results = {m: run_method(shot, m, preset) for m in METHODS if m != "render" or shot.guided}
        if ffmpeg is not None:
            results["minterpolate"] = run_minterpolate(ffmpeg, shot)
        for method, result in results.items():
            lines.append(f"  {shot.name:<20} {LABELS[method]:<16} {count / result.seconds:9.2f} "
                         f"{1000 * result.seconds / count:11.0f} "
                         f"{1000 * result.cpu_seconds / count:15.0f}")  # fmt: skip
    if ffmpeg is None:
        lines.append("  minterpolate: ffmpeg not found, minterpolate skipped")
    else:
        lines.append("  (minterpolate: the whole ffmpeg process, PNG reading and writing included)")
    return lines


def _quality_shots(blender_python: Path, folder: Path, settings: Settings) -> list[Shot]:
    """The rendered and drawn shots; ones already in the folder at this size are reused."""
    found = [Shot.load(p.parent) for p in sorted(folder.glob("*/shot.json"))]
    expected = (settings.width, settings.height, settings.frames)
    if found and all((s.width, s.height, len(s.frames)) == expected for s in found):
        return found
    render_shots(blender_python, folder, settings)
    write_shots(folder, settings.width, settings.height, settings.frames)
    return [Shot.load(p.parent) for p in sorted(folder.glob("*/shot.json"))]


def _score_all(shots: list[Shot], methods: list[str], ffmpeg: str | None, preset: str) -> Scores:
    scores: Scores = {}
    for shot in shots:
        for method in methods:
            if method == "render" and not shot.guided:
                continue
            if method == "minterpolate":
                result = run_minterpolate(ffmpeg, shot)  # type: ignore[arg-type]
            else:
                result = run_method(shot, method, preset)
            scores[(shot.name, method)] = score(shot, result)
    return scores


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
        shots = _quality_shots(blender_python, folder / "quality", settings)
        if args.shot:
            shots = [s for s in shots if s.name in args.shot]
        print(f"{len(shots)} shots ready in {time.perf_counter() - started:.1f} s")
        methods = list(METHODS) + (["minterpolate"] if ffmpeg else [])
        scores = _score_all(shots, methods, ffmpeg, args.flow_preset)
        for block in (quality_table(shots, scores, methods),
                      pieces_table(shots, scores, methods), aims(shots, scores, methods)):  # fmt: skip
            if block:
                print()
                print("\n".join(block))
        if not args.no_speed:
            print()
            print("\n".join(speed(blender_python, folder, settings, ffmpeg, args.flow_preset)))
    return 0
