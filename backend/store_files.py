"""The file side of the store: one folder per job, its uploaded inputs and finished output
frames as atomic files named by frame number, and never a path that leads outside the data
folder through a symlink. The files are the truth for what was uploaded and what has finished."""

from __future__ import annotations

import re
from pathlib import Path

from .files import TMP_MARK, atomic_write
from .jobs import Pass, PipelineError

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
FRAME_DIGITS = 6


def frame_name(frame: int, ext: str) -> str:
    sign = "-" if frame < 0 else ""
    return f"{sign}{abs(frame):0{FRAME_DIGITS}d}.{ext}"


class UnsafePath(PipelineError):
    """A path in the data folder is a symlink or lies behind one: it could lead outside."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"refusing to use {path}: it is a symlink or lies behind one, and Framesmith only"
            " reads and writes real files inside its data folder"
        )


class DamagedJobFolder(UnsafePath):
    """A job's folder is something other than a folder (a damaged data folder)."""

    def __init__(self, path: Path) -> None:
        PipelineError.__init__(
            self,
            f"{path} should be this job's folder but is not a folder (the data folder was"
            " damaged or edited by hand); create the job again",
        )


class JobFiles:
    """Where a job's inputs and outputs are and which are there; mixed into Store, which owns
    `jobs_dir` and commits uploads under its lock."""

    jobs_dir: Path

    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs_dir / job_id

    def _real(self, path: Path) -> bool:
        """No symlink on the way from the (resolved) data folder to `path`, path included."""
        return path.resolve() == path

    def input_path(self, job_id: str, pass_: Pass, frame: int, ext: str) -> Path:
        return self.job_dir(job_id) / "inputs" / pass_.value / frame_name(frame, ext)

    def find_input(self, job_id: str, pass_: Pass, frame: int) -> Path | None:
        for ext in ("png", "exr"):
            p = self.input_path(job_id, pass_, frame, ext)
            if self._real(p) and p.is_file():
                return p
        return None

    def _check_folder(self, job_id: str) -> None:
        folder = self.job_dir(job_id)
        if folder.exists() and not folder.is_dir():
            raise DamagedJobFolder(folder)

    def uploaded(self, job_id: str) -> dict[Pass, set[int]]:
        out: dict[Pass, set[int]] = {}
        base = self.job_dir(job_id) / "inputs"
        for p in Pass:
            folder = base / p.value
            if self._real(folder) and folder.is_dir():
                frames = {_frame_of(f) for f in folder.iterdir() if _is_frame_file(f)}
                out[p] = {f for f in frames if f is not None}
        return out

    def output_path(self, job_id: str, frame: int) -> Path:
        return self.job_dir(job_id) / "outputs" / frame_name(frame, "png")

    def has_output(self, job_id: str, frame: int) -> bool:
        path = self.output_path(job_id, frame)
        return self._real(path) and path.is_file()

    def read_output(self, job_id: str, frame: int) -> bytes | None:
        """A finished frame's PNG bytes; None if not finished (or not a real file in here)."""
        path = self.output_path(job_id, frame)
        if not self._real(path):
            return None
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_output(self, job_id: str, frame: int, png: bytes) -> None:
        path = self.output_path(job_id, frame)
        self._check_folder(job_id)
        if not self._real(path.parent):
            raise UnsafePath(path.parent)
        atomic_write(path, png)  # a symlink planted at `path` itself is replaced, not followed

    def finished_frames(self, job_id: str) -> list[int]:
        folder = self.job_dir(job_id) / "outputs"
        if not (self._real(folder) and folder.is_dir()):
            return []
        frames = [_frame_of(f) for f in folder.iterdir() if _is_frame_file(f)]
        return sorted(f for f in frames if f is not None)


def _is_frame_file(p: Path) -> bool:
    return TMP_MARK not in p.name and not p.is_symlink() and p.is_file()


def _frame_of(p: Path) -> int | None:
    try:
        return int(p.stem)
    except ValueError:
        return None
