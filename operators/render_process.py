"""Interactive takes render in a background Blender process, so Blender's UI stays live while
frames render: the scene is saved to a copy in the take folder, `blender -b copy.blend --python
render_child.py` renders it, and each timer tick reads the frames it finished from its progress
file (without waiting). Cancel ends the process; a crash is reported with its log's last lines.

In the bpy module (tests, scripts) `bpy.app.binary_path` is empty: the module's Python runs the
same script, which opens the copy itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .render import FrameRenders

CHILD_SCRIPT = Path(__file__).resolve().with_name("render_child.py")
LOG_TAIL_LINES = 12
STOP_GRACE = 3.0  # seconds a canceled render process gets to end before it is killed


def render_command(blend: Path, spec: Path) -> list[str]:
    """The command that renders a take's spec: Blender's own binary on the saved copy, or this
    Python (the bpy module), whose script opens the copy itself."""
    binary = bpy.app.binary_path
    if binary and Path(binary).is_file() and not Path(binary).name.startswith("python"):
        return [binary, "-b", str(blend), "--python-exit-code", "1",
                "--python", str(CHILD_SCRIPT), "--", str(spec)]  # fmt: skip
    return [sys.executable, str(CHILD_SCRIPT), "--", str(spec)]


def _reap(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or "(empty log)"


@dataclass
class ProcessRenders(FrameRenders):
    """The take's renders, done by a background Blender process; `step()` never waits."""

    _process: subprocess.Popen | None = field(default=None, repr=False)
    _offset: int = 0  # bytes of the progress file read so far
    _ended: bool = False  # the child said it rendered everything

    @property
    def work(self) -> Path:
        return self.folder / "render-process"

    @property
    def log(self) -> Path:
        return self.work / "render.log"

    def step(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        """Start the process on the first call; then the files of every frame it finished since
        the last call (maybe none). Raises RuntimeError when the process failed."""
        if self._process is None:
            self._start(scene)
            return {}
        files = self._read_progress()
        if not self.finished and self._process.poll() is not None:
            files.update(self._read_progress())  # lines written just before it ended
            if not self.finished:
                raise RuntimeError(self._crash_sentence())
        return files

    def all(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        raise NotImplementedError("background runs render in-process (FrameRenders.all)")

    def stop(self) -> None:
        """End the process (cancel, file load, unregister) without waiting for it here: a
        thread kills it if it has not ended after a grace period. Finished frames stay."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        threading.Thread(target=_reap, args=(process,), name="framesmith-reap", daemon=True).start()

    # --- helpers -----------------------------------------------------------------------------

    def _start(self, scene: bpy.types.Scene) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        copy = self.work / "scene.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, check_existing=False)
        spec = self.work / "spec.json"
        progress = self.work / "progress.jsonl"
        progress.write_bytes(b"")
        spec.write_text(json.dumps({
            "blend": str(copy), "scene": scene.name, "folder": str(self.folder),
            "progress": str(progress), "batches": [b.to_json() for b in self.batches],
        }), encoding="utf-8")  # fmt: skip
        env = dict(os.environ, FRAMESMITH_RENDER_CHILD="1")
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                render_command(copy, spec), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=str(self.work),
            )  # fmt: skip

    def _read_progress(self) -> dict[tuple[str, int], Path]:
        """Complete lines appended since the last read."""
        path = self.work / "progress.jsonl"
        with open(path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        files: dict[tuple[str, int], Path] = {}
        for line in chunk[:end].decode("utf-8").splitlines():
            said = json.loads(line)
            if said.get("end"):
                self._ended = True
                continue
            for name, frame, file in said["files"]:
                files[(str(name), int(frame))] = Path(file)
            self.done += 1
        self._files.update(files)
        return files

    def _crash_sentence(self) -> str:
        code = self._process.returncode if self._process else None
        where = f"before frame {self.current_frame}" if not self.finished else "at the end"
        return (
            f"the render process ended (exit code {code}) {where}; its log "
            f"({self.log}) ends with:\n{log_tail(self.log)}"
        )
