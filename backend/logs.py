"""Logging: one line per request and per job transition, to stderr and a rotating file."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every record's message on one line: a line break or other control character that came
    from a request (a path, a job's error) is written as an escape, so no one can forge a log
    line. Tracebacks, which the backend writes itself, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if not message.isprintable():
            record.message = "".join(
                c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                for c in message
            )
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


def setup(data_dir: Path, level: int = logging.INFO) -> Path:
    log_dir = data_dir / "logs"
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = log_dir / "backend.log"
    _private(log_dir, path)
    root = logging.getLogger("framesmith")
    root.setLevel(level)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    file_handler.setFormatter(OneLineFormatter(FORMAT))
    root.addHandler(file_handler)
    stream = logging.StreamHandler()
    stream.setFormatter(OneLineFormatter(FORMAT))
    root.addHandler(stream)
    return path


def _private(log_dir: Path, path: Path) -> None:
    """The log names jobs and prompts: owner-only, created so (not chmod-ed after the fact), and
    tightened where an older version left it readable. Rotated files keep the mode by rename."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    for p in (log_dir, *log_dir.glob(path.name + "*")):
        if p.stat().st_mode & 0o077 and p.stat().st_uid == os.getuid():
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
