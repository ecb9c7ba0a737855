"""Fault injection for the cluster tests only, read by the workers from their environment (the
head passes every FRAMESMITH_FAULT_RAY_* variable of its own on to them)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("framesmith.cluster.faults")

PREFIX = "FRAMESMITH_FAULT_RAY_"
# "die": a worker's process exits in its constructor, before it could say who it is.
START_ENV = PREFIX + "START"
# A folder: after a worker sends a frame, it claims an `arm-NAME` file there, if one is left, by
# renaming it `held-NAME-PID-JOB`, and holds its piece until `release-NAME` appears there or the
# piece is canceled. The tests arm holds to catch workers mid-piece, one hold per file.
HOLD_DIR_ENV = PREFIX + "HOLD_DIR"


def fault_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def die_at_start_if_asked() -> None:
    if os.environ.get(START_ENV) == "die":
        log.error("%s=die: this worker exits at start (a test fault)", START_ENV)
        os._exit(3)


def hold_if_armed(job_id: str, cancel: threading.Event) -> None:
    folder = os.environ.get(HOLD_DIR_ENV)
    if not folder:
        return
    for arm in sorted(Path(folder).glob("arm-*")):
        name = arm.name.removeprefix("arm-")
        try:
            os.rename(arm, arm.with_name(f"held-{name}-{os.getpid()}-{job_id}"))
        except FileNotFoundError:
            continue  # another worker claimed it first
        release = arm.with_name(f"release-{name}")
        log.warning("hold %s: holding this piece until %s exists (a test fault)", name, release)
        while not cancel.wait(0.05):
            if release.exists():
                return
        return
