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
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.http import BackendClient  # noqa: E402
from client.launcher import LaunchSpec, launch, stop  # noqa: E402

BLENDER_PY = ROOT / ".venv-blender" / "bin" / "python"
KEY_EVERY = 3


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def inbetween(
    client: BackendClient,
    render: dict[int, Path],
    keys: list[int],
    method: str,
    out: Path,
    size: tuple[int, int],
) -> dict:
    frames = sorted(render)
    request = {
        "kind": "inbetween",
        "frames": frames,
        "keyframes": keys,
        "width": size[0],
        "height": size[1],
        "params": {"method": method},
    }
    job = client.create_job(request)
    for k in keys:
        client.upload(job["id"], "keyframe", k, render[k].read_bytes())
    client.start(job["id"])
    last = -1
    while True:
        state = client.job(job["id"])
        done = len(state["finished_frames"])
        if done != last:
            print(f"  {method}: {done}/{len(frames)} frames", flush=True)
            last = done
        if state["state"] in ("done", "failed", "canceled"):
            break
        time.sleep(0.2)  # polling a job's progress, as the add-on does
    if state["state"] != "done":
        raise SystemExit(f"{method} in-between job {state['state']}: {state['error']}")
    out.mkdir(parents=True, exist_ok=True)
    for f in frames:
        (out / f"{f:04d}.png").write_bytes(client.output(job["id"], f))
    (out / "request.json").write_text(json.dumps({**request, "job_id": job["id"]}, indent=2))
    return request


def contact_sheet(
    rows: list[tuple[str, Path]], frames: list[int], keys: list[int], dest: Path
) -> None:
    tiles = []
    for label, folder in rows:
        row = []
        for f in frames:
            img = cv2.imread(str(folder / f"{f:04d}.png"))
            img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
            tag = f"{f}{' key' if f in keys else ''}"
            cv2.putText(img, tag, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2)
            cv2.putText(img, tag, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            row.append(img)
        strip = np.hstack(row)
        head = np.full((18, strip.shape[1], 3), 30, np.uint8)
        cv2.putText(head, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(np.vstack([head, strip]))
    cv2.imwrite(str(dest), np.vstack(tiles))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=ROOT / "demo-output")
    p.add_argument("--skip-models", action="store_true", help="do not write the tiny models")
    args = p.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    run([str(BLENDER_PY), "demo/render_shot.py", "--out", str(out)])
    render = {int(f.stem): f for f in sorted((out / "render").glob("*.png"))}
    frames = sorted(render)
    keys = sorted({*frames[::KEY_EVERY], frames[-1]})
    h, w = cv2.imread(str(render[frames[0]])).shape[:2]

    models = out / "models"
    if not args.skip_models:
        run([sys.executable, "-m", "backend", "make-tiny-models", str(models)])

    spec = LaunchSpec(
        python=Path(sys.executable),
        root=ROOT,
        data_dir=out / "backend-data",
        models_dir=models,
        device="cpu",
    )
    stop(spec.data_dir)
    running = launch(spec)
    client = BackendClient(running.connection)
    try:
        health = client.health()
        print(f"backend {health['version']} on {health['device']}", flush=True)
        req_flow = inbetween(client, render, keys, "flow", out / "inbetween_flow", (w, h))
        req_fade = inbetween(client, render, keys, "crossfade", out / "inbetween_crossfade", (w, h))
    finally:
        stop(spec.data_dir)

    scores = {}
    for name in ("flow", "crossfade"):
        vals = [
            psnr(
                cv2.imread(str(out / f"inbetween_{name}" / f"{f:04d}.png")),
                cv2.imread(str(render[f])),
            )
            for f in frames
            if f not in keys
        ]
        scores[name] = sum(vals) / len(vals)

    (out / "req_flow.json").write_text(json.dumps(req_flow))
    (out / "req_fade.json").write_text(json.dumps(req_fade))
    run(
        [
            str(BLENDER_PY),
            "demo/build_blend.py",
            "--shot",
            str(out / "shot.blend"),
            "--out",
            str(out / "framesmith_demo.blend"),
            "--strip",
            "Render",
            str(out / "render"),
            "1",
            "-",
            "--strip",
            "In-between (flow)",
            str(out / "inbetween_flow"),
            "2",
            str(out / "req_flow.json"),
            "--strip",
            "In-between (cross-fade)",
            str(out / "inbetween_crossfade"),
            "3",
            str(out / "req_fade.json"),
        ]
    )
    sheet_frames = [f for f in frames if keys[0] <= f <= keys[2]]
    contact_sheet(
        [
            ("rendered (truth)", out / "render"),
            ("Framesmith in-between: flow", out / "inbetween_flow"),
            ("cross-fade", out / "inbetween_crossfade"),
        ],
        sheet_frames,
        keys,
        out / "contact_sheet.png",
    )

    summary = (
        f"Framesmith demo: {len(frames)} frames at {w}x{h}, rendered headless with Cycles;"
        f" keys every {KEY_EVERY} frames ({keys}).\n"
        "Models used: none. In-betweening by 'flow' needs no weights: OpenCV DIS optical flow"
        " both ways + softmax splatting, computed by the backend.\n"
        f"Tiny random models (test fixtures, not real weights) were written to {models}.\n"
        f"In-between quality against the true rendered frames (mean PSNR over {len(frames) - len(keys)}"
        f" in-betweens): flow {scores['flow']:.2f} dB, cross-fade {scores['crossfade']:.2f} dB.\n"
        f"Results: {out}/inbetween_flow, inbetween_crossfade, framesmith_demo.blend (strips on"
        " channels 1-3), contact_sheet.png\n"
    )
    (out / "SUMMARY.txt").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
