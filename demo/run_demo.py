"""`make demo`: render a small shot headless, run it through the real backend, keep the results.

Leaves in the output folder: the rendered shot, the in-betweened sequences, a .blend with the
strips on the timeline, a contact sheet, and a summary saying which models were used.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

BLENDER_PY = ROOT / ".venv-blender" / "bin" / "python"
BLENDER5_PY = ROOT / ".venv-blender5" / "bin" / "python"  # made by `make setup` where it can
KEY_EVERY = 3


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def contact_sheet(
    rows: list[tuple[str, dict[int, Path]]], frames: list[int], keys: list[int], dest: Path
) -> None:
    tiles = []
    h, w = cv2.imread(str(rows[0][1][frames[0]])).shape[:2]
    for label, files in rows:
        row = []
        for f in frames:
            img = cv2.imread(str(files[f]))  # a take at a working size is shown at the shot's
            img = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
            tag = f"{f}{' key' if f in keys else ''}"
            cv2.putText(img, tag, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2)
            cv2.putText(img, tag, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            row.append(img)
        strip = np.hstack(row)
        head = np.full((18, strip.shape[1], 3), 30, np.uint8)
        cv2.putText(head, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(np.vstack([head, strip]))
    cv2.imwrite(str(dest), np.vstack(tiles))


def frames_in(folder: Path) -> dict[int, Path]:
    """Scene frame -> file, from the add-on's output folder (file names end in the frame)."""
    out = {}
    for f in sorted(folder.glob("*.png")):
        digits = "".join(ch for ch in f.stem.split("_")[-1] if ch.isdigit())
        if digits:
            out[int(digits)] = f
    return out


def addon_demo(python: Path, shot: Path, out: Path, models: Path) -> dict:
    """Run demo/addon_demo.py with one Blender environment; its results (three strips checked)."""
    out.mkdir(parents=True, exist_ok=True)
    run([str(python), "demo/addon_demo.py", "--shot", str(shot), "--out", str(out),
         "--models", str(models), "--key-every", str(KEY_EVERY)])  # fmt: skip
    return json.loads((out / "addon_results.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=ROOT / "demo-output")
    args = p.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    run([str(BLENDER_PY), "demo/render_shot.py", "--out", str(out)])
    render = {int(f.stem): f for f in sorted((out / "render").glob("*.png"))}
    frames = sorted(render)

    models = out / "models"
    run([sys.executable, "-m", "backend", "make-tiny-models", str(models)])
    results = addon_demo(BLENDER_PY, out / "shot.blend", out, models)
    also = []
    if BLENDER5_PY.is_file():  # the same operators on Blender 5.x, results in a folder of its own
        five = addon_demo(BLENDER5_PY, out / "shot.blend", out / "blender-5", models)
        also.append(f"{five['blender']}: {len(five['strips_in_saved_blend'])} strips in"
                    f" {out / 'blender-5' / 'framesmith_demo.blend'}")  # fmt: skip
    keys = results["keys"]
    takes = {name: frames_in(Path(results[name]["folder"]))
             for name in ("inbetween", "crossfade", "stylize")}  # fmt: skip
    for name, got in takes.items():
        if sorted(got) != frames:
            raise SystemExit(f"{name}: frames {sorted(got)} do not match the shot's {frames}")

    scores = {}
    for name in ("inbetween", "crossfade"):
        vals = [psnr(cv2.imread(str(takes[name][f])), cv2.imread(str(render[f])))
                for f in frames if f not in keys]  # fmt: skip
        scores[name] = sum(vals) / len(vals)

    sheet = [f for f in frames if keys[0] <= f <= keys[2]]
    contact_sheet(
        [("rendered (truth)", render), ("Framesmith in-between: flow", takes["inbetween"]),
         ("cross-fade", takes["crossfade"]),
         ("stylize (TINY RANDOM weights: noise, not a style)", takes["stylize"])],
        sheet, keys, out / "contact_sheet.png",
    )  # fmt: skip
    h, w = cv2.imread(str(render[frames[0]])).shape[:2]
    stylize_req = results["stylize"]["request"]
    summary = (
        f"Framesmith demo: {len(frames)} frames at {w}x{h}, rendered headless with Cycles, then"
        " driven through the add-on's own operators (bpy.ops.framesmith.inbetween / stylize)"
        " against a local backend the add-on launched.\n"
        "MODELS USED:\n"
        "- In-between: none. 'flow' needs no weights (OpenCV DIS optical flow both ways +"
        " softmax splatting).\n"
        f"- Stylize: the TINY RANDOM test models written by `python -m backend make-tiny-models`"
        f" to {models} (no real weights can be downloaded here), so the stylized strip is"
        " structured noise, proving the pipeline runs, not what a real checkpoint would paint."
        " Put your own SD1.5 checkpoint, motion module and ControlNets in a models folder to"
        " get real styles.\n"
        f"  request: {json.dumps(stylize_req, sort_keys=True)[:600]}\n"
        f"In-between quality against the true rendered frames (keys every {KEY_EVERY} frames,"
        f" mean PSNR over {len(frames) - len(keys)} in-betweens): flow {scores['inbetween']:.2f}"
        f" dB, cross-fade {scores['crossfade']:.2f} dB.\n"
        f"Results in {out}: framesmith_demo.blend (strips: in-between, cross-fade take above it,"
        " stylize), the image sequences under framesmith/, render/ (truth), contact_sheet.png.\n"
        f"Blender versions driven: {results['blender']}: {len(results['strips_in_saved_blend'])}"
        f" strips in the saved .blend{''.join('; ' + a for a in also)}.\n"
    )
    (out / "SUMMARY.txt").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
