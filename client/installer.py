"""Install the backend's environment with Blender's own Python, without a terminal.

venv → torch (the build for this machine) → requirements/backend.txt → `python -m backend doctor`,
each step a child process. `Installer` runs them on its own thread and posts typed messages
(progress, then one of finished / failed / canceled) to a queue that the add-on drains from a
timer. Every line of every step goes to a log file in the environment's folder; each finished
step is recorded in a state file there, so a re-run continues where a failed or canceled install
stopped, and redoes the requirements when requirements/backend.txt changed since.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

TORCH_VERSION = "2.13.0"  # the Makefile's pin
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
PYPI = "https://pypi.org/simple/"
# The CUDA builds PyTorch publishes, newest first: the newest the driver supports is chosen.
CUDA_TAGS = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))
STATE_FILE = "framesmith-install.json"
LOG_FILE = "framesmith-install.log"
REQUIREMENTS = Path("requirements") / "backend.txt"
GB = 1024**3
TERMINATE_GRACE_S = 10.0


class TorchBuild(enum.StrEnum):
    AUTO = "auto"  # CUDA where an NVIDIA driver is found, the PyPI build on macOS, else CPU
    CPU = "cpu"
    CUDA = "cuda"
    DEFAULT = "default"  # whatever the package index serves (PyPI: Apple's MPS build on macOS)


class Step(enum.StrEnum):
    VENV = "venv"
    TORCH = "torch"
    REQUIREMENTS = "requirements"
    DOCTOR = "doctor"


STEP_TITLES = {
    Step.VENV: "Creating the environment",
    Step.TORCH: "Installing torch",
    Step.REQUIREMENTS: "Installing the backend's packages",
    Step.DOCTOR: "Checking the backend",
}


@dataclass(frozen=True)
class Settings:
    torch_build: TorchBuild = TorchBuild.AUTO
    torch_version: str = TORCH_VERSION  # empty: no torch step (requirements bring their own)
    index_url: str = ""  # empty: pip's own configuration (PyPI unless pip.conf says otherwise)
    torch_index_url: str = ""  # empty: PyTorch's index for the build (none for DEFAULT)


@dataclass(frozen=True)
class InstallSpec:
    python: Path  # the interpreter that makes the environment: Blender's own (sys.executable)
    target: Path  # the environment's folder; the log and the state file live in it too
    root: Path  # the extension's folder: requirements/backend.txt and the `backend` package
    settings: Settings = field(default_factory=Settings)
    min_free_gb: float | None = None  # None: by the torch build (CUDA wheels are large)


# --- messages (worker thread → main thread) --------------------------------------------------


@dataclass(frozen=True)
class Progress:
    step: Step
    index: int  # 1-based
    total: int
    fraction: float  # of the whole install, 0..1
    text: str
    package: str = ""


@dataclass(frozen=True)
class Finished:
    python: Path  # the new environment's interpreter
    log: Path


@dataclass(frozen=True)
class Failed:
    message: str  # one sentence a person can act on
    log: Path


@dataclass(frozen=True)
class Canceled:
    log: Path


Message = Progress | Finished | Failed | Canceled


class InstallError(Exception):
    """A step failed; the message says why and what to do."""


class _CanceledError(Exception):
    pass


# --- pure parts --------------------------------------------------------------------------------


def env_python(target: Path) -> Path:
    if os.name == "nt":
        return target / "Scripts" / "python.exe"
    return target / "bin" / "python"


def requirements_hash(root: Path) -> str:
    return hashlib.sha256((root / REQUIREMENTS).read_bytes()).hexdigest()


def cuda_tag(nvidia_smi_output: str) -> str:
    """The newest PyTorch CUDA build the driver supports ("CUDA Version: 12.8" in nvidia-smi)."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi_output)
    if found is None:
        return CUDA_TAGS[1][1]
    driver = (int(found.group(1)), int(found.group(2)))
    for version, tag in CUDA_TAGS:
        if version <= driver:
            return tag
    return CUDA_TAGS[-1][1]  # an old driver: the oldest build, the likeliest to load


def resolve_build(build: TorchBuild, system: str, nvidia_smi_output: str | None) -> TorchBuild:
    """`auto` made concrete: nvidia_smi_output is None where no NVIDIA driver was found."""
    if build is not TorchBuild.AUTO:
        return build
    if system == "Darwin":
        return TorchBuild.DEFAULT
    return TorchBuild.CPU if nvidia_smi_output is None else TorchBuild.CUDA


def torch_index(settings: Settings, build: TorchBuild, nvidia_smi_output: str | None) -> str:
    """The index torch comes from; empty for the package index itself."""
    if settings.torch_index_url:
        return settings.torch_index_url
    if build is TorchBuild.CPU:
        return PYTORCH_INDEX + "cpu"
    if build is TorchBuild.CUDA:
        return PYTORCH_INDEX + cuda_tag(nvidia_smi_output or "")
    return ""


def remote_indexes(settings: Settings) -> list[str]:
    """The indexes an install would reach beyond this machine ("" : pip's own configuration,
    PyPI unless pip.conf says otherwise)."""
    urls = [settings.index_url]
    if settings.torch_version and settings.torch_build is not TorchBuild.DEFAULT:
        urls.append(settings.torch_index_url or PYTORCH_INDEX)
    return [url for url in urls if not _is_local(url)]


def _is_local(url: str) -> bool:
    if url.startswith("file:"):
        return True
    host = urllib.parse.urlsplit(url).hostname or ""
    return bool(url) and (host in ("localhost", "::1") or host.startswith("127."))


@dataclass(frozen=True)
class StepPlan:
    step: Step
    argv: tuple[str, ...]
    index_url: str  # where its packages come from, for the error sentence ("" : none)
    key: str  # fingerprint of this step and every step before it ("" : always runs)


def plan_steps(spec: InstallSpec, torch_from: str) -> list[StepPlan]:
    """The child processes, in order. Each key chains the previous one, so a redone step redoes
    every step after it."""
    settings, python = spec.settings, str(env_python(spec.target))
    pip = (python, "-m", "pip", "install", "--progress-bar", "off")
    package_index = ("--index-url", settings.index_url) if settings.index_url else ()
    torch_pin = (f"torch=={settings.torch_version}",) if settings.torch_version else ()
    plans: list[StepPlan] = []

    def add(step: Step, argv: tuple[str, ...], index_url: str, inputs: str) -> None:
        previous = plans[-1].key if plans else ""
        key = hashlib.sha256(f"{previous}|{step}|{inputs}".encode()).hexdigest() if inputs else ""
        plans.append(StepPlan(step, argv, index_url, key))

    add(Step.VENV, (str(spec.python), "-m", "venv", str(spec.target)), "", str(spec.python))
    if torch_pin:
        if torch_from:
            extra = ("--extra-index-url", settings.index_url) if settings.index_url else ()
            argv = (*pip, *torch_pin, "--index-url", torch_from, *extra)
        else:
            argv = (*pip, *torch_pin, *package_index)
        add(Step.TORCH, argv, torch_from or settings.index_url, f"{torch_pin[0]} {torch_from}")
    # torch named again: a dependency's range can never swap the chosen build for another one
    requirements = str(spec.root / REQUIREMENTS)
    argv = (*pip, "-r", requirements, *torch_pin, *package_index)
    add(Step.REQUIREMENTS, argv, settings.index_url, requirements_hash(spec.root))
    add(Step.DOCTOR, (python, "-m", "backend", "doctor"), "", "")
    return plans


_PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def package_name(spec: str) -> str:
    """`diffusers==0.42.1`, `torch-2.13.0+cpu-cp311-….whl`, a URL or a path → the name."""
    base = spec.rstrip("/").rsplit("/", 1)[-1]
    if base.endswith((".whl", ".tar.gz", ".zip")):
        base = base.split("-", 1)[0]
    found = _PACKAGE_NAME.match(base)
    return found.group(0) if found else ""


_PIP_LINES = (
    ("Collecting ", "Collecting"),
    ("Requirement already satisfied: ", "Already installed"),
    ("Processing ", "Unpacking"),
    ("Downloading ", "Downloading"),
    ("Using cached ", "Cached"),
)


@dataclass
class PipProgress:
    """Reads pip's output line by line: the package in hand and how far the step is (0..1)."""

    collected: int = 0
    fraction: float = 0.0

    def feed(self, line: str) -> tuple[float, str, str] | None:
        """(fraction of this step, text, package), or None for a line that says nothing new."""
        line = line.strip()
        for prefix, verb in _PIP_LINES:
            if line.startswith(prefix):
                rest = line[len(prefix) :]
                name = package_name(rest.split(" ", 1)[0])
                if verb in ("Collecting", "Already installed"):
                    self.collected += 1
                    self.fraction = max(self.fraction, min(0.6, 0.05 * self.collected))
                size = re.search(r"\(([\d.]+ [kMG]?B)\)", rest)
                text = f"{verb} {name}" + (f" ({size.group(1)})" if size else "")
                return self.fraction, text, name
        if line.startswith("Installing collected packages:"):
            names = [n.strip() for n in line.split(":", 1)[1].split(",") if n.strip()]
            self.fraction = max(self.fraction, 0.7)
            return self.fraction, f"Installing {len(names)} packages", ", ".join(names[:3])
        if line.startswith("Successfully installed"):
            self.fraction = 1.0
            return self.fraction, "Installed", ""
        return None


_NETWORK = ("Failed to establish a new connection", "Name or service not known",
            "Temporary failure in name resolution", "nodename nor servname", "getaddrinfo failed",
            "Connection refused", "Network is unreachable", "No route to host", "Max retries exceeded",
            "ConnectTimeoutError", "Read timed out", "ProxyError", "Could not fetch URL",
            "SSLError", "Connection reset by peer")  # fmt: skip
_DISK = ("No space left on device", "[Errno 28]", "There is not enough space on the disk")
_NO_VENV = ("ensurepip", "No module named venv", "No module named 'venv'")


def fault(line: str) -> str:
    """The known fault a line of output names: "disk", "network", "venv" or ""."""
    if any(token in line for token in _DISK):
        return "disk"
    if any(token in line for token in _NETWORK):
        return "network"
    if any(token in line for token in _NO_VENV):
        return "venv"
    return ""


def disk_full_sentence(target: Path, need_gb: float) -> str:
    return (
        f"The disk holding {target} is full: free at least {need_gb:.0f} GB there (or choose"
        " another folder), then press Install Backend again to continue where it stopped"
    )


def explain(plan: StepPlan, faults: set[str], tail: list[str], spec: InstallSpec) -> str:
    """One sentence for a failed step, from the faults its output named."""
    if "disk" in faults:
        return disk_full_sentence(spec.target, free_space_needed(spec))
    if plan.step is Step.VENV and "venv" in faults:
        return (
            f"This Python ({spec.python}) cannot create virtual environments: its venv or"
            " ensurepip module is missing. Use Blender from blender.org (its Python has both),"
            " install your system's python3-venv package, or set Backend Python to an"
            " environment you made yourself"
        )
    if "network" in faults:
        where = plan.index_url or "PyPI"
        return (
            f"Could not reach the package index ({where}): check this computer's internet"
            " connection, proxy or firewall and the index URL in the Framesmith preferences,"
            " then press Install Backend again to continue where it stopped"
        )
    last = next((line.strip() for line in reversed(tail) if line.strip()), "no output")
    return (
        f"{STEP_TITLES[plan.step]} failed: {last} (the whole output is in {spec.target / LOG_FILE})"
    )


def reachable(url: str, timeout: float = 10.0) -> bool:
    """Whether an index answers at all (any HTTP status counts); local folders always do."""
    if not url.startswith(("http:", "https:")):
        return True
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def free_space_needed(spec: InstallSpec) -> float:
    if spec.min_free_gb is not None:
        return spec.min_free_gb
    return 8.0 if spec.settings.torch_build is TorchBuild.CUDA else 3.0


def free_gb(path: Path) -> float:
    while not path.exists() and path.parent != path:
        path = path.parent
    return shutil.disk_usage(path).free / GB


def load_state(target: Path) -> dict[str, str]:
    try:
        state = json.loads((target / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    done = state.get("done") if isinstance(state, dict) else None
    return {str(k): str(v) for k, v in done.items()} if isinstance(done, dict) else {}


def save_state(target: Path, done: dict[str, str]) -> None:
    path = target / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"version": 1, "done": done}, indent=1))
    os.replace(temporary, path)


def child_env() -> dict[str, str]:
    """Blender's environment without what would point the child at Blender's own Python."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env.update(PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1", PIP_NO_INPUT="1")
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONIOENCODING="utf-8")
    return env


# --- the worker ----------------------------------------------------------------------------------


class Installer:
    """One install on its own thread: `start()`, then drain `messages`; `cancel()` at any time."""

    def __init__(self, spec: InstallSpec) -> None:
        self.spec = spec
        self.log_path = spec.target / LOG_FILE
        self.messages: queue.Queue[Message] = queue.Queue()
        self._canceled = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self.run, name="framesmith-install", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Returns at once: the running child is terminated, the thread posts Canceled."""
        self._canceled.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                _terminate(self._process)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self) -> Message:
        """The whole install in the calling thread; the last message is also returned."""
        try:
            final: Message = self._install()
        except _CanceledError:
            final = Canceled(self.log_path)
        except InstallError as error:
            final = Failed(str(error), self.log_path)
        except OSError as error:
            final = Failed(self._os_error_sentence(error), self.log_path)
        with contextlib.suppress(OSError):  # a full disk or a missing folder: said in `final`
            self._log(f"== {type(final).__name__}: {getattr(final, 'message', '')}")
        self.messages.put(final)
        return final

    def _install(self) -> Finished:
        spec = self.spec
        if not spec.python.is_file():
            raise InstallError(
                f"The Python {spec.python} that should make the environment is missing"
            )
        if not (spec.root / REQUIREMENTS).is_file():
            raise InstallError(f"{spec.root / REQUIREMENTS} is missing: reinstall the extension")
        spec.target.mkdir(parents=True, exist_ok=True)
        self._log(f"== install into {spec.target} with {spec.python} ({spec.settings})")
        plans = plan_steps(spec, self._torch_index())
        done = load_state(spec.target) if env_python(spec.target).is_file() else {}
        if any(
            done.get(p.step) != p.key for p in plans if p.step in (Step.TORCH, Step.REQUIREMENTS)
        ):
            self._check_free_space()
        total = len(plans)
        for index, plan in enumerate(plans, start=1):
            if self._canceled.is_set():
                raise _CanceledError
            if plan.key and done.get(plan.step) == plan.key:
                self._post(plan.step, index, total, 1.0, "Already done")
                continue
            self._run_step(plan, index, total)
            if plan.key:
                done[plan.step] = plan.key
                save_state(spec.target, done)
        return Finished(env_python(spec.target), self.log_path)

    def _torch_index(self) -> str:
        settings = self.spec.settings
        if not settings.torch_version:
            return ""
        smi = None
        if settings.torch_build in (TorchBuild.AUTO, TorchBuild.CUDA):
            smi = _nvidia_smi()
            self._log(f"== nvidia-smi: {'found' if smi is not None else 'not found'}")
        build = resolve_build(settings.torch_build, platform.system(), smi)
        index = torch_index(settings, build, smi)
        self._log(f"== torch {settings.torch_version}, {build} build, from {index or 'the index'}")
        return index

    def _check_free_space(self) -> None:
        need, free = free_space_needed(self.spec), free_gb(self.spec.target)
        self._log(f"== free space: {free:.1f} GB, needed {need:.1f} GB")
        if free < need:
            raise InstallError(disk_full_sentence(self.spec.target, need))

    def _run_step(self, plan: StepPlan, index: int, total: int) -> None:
        title = STEP_TITLES[plan.step]
        self._post(plan.step, index, total, 0.0, title)
        self._log(f"== step {index}/{total}: {title}\n$ {' '.join(plan.argv)}")
        process = subprocess.Popen(
            plan.argv,
            cwd=self.spec.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_env(),
            **_session_args(),
        )
        with self._lock:
            self._process = process
        if self._canceled.is_set():
            _terminate(process)
        try:
            faults, tail = self._follow(process, plan, index, total)
        except BaseException:  # the log could not be written (a full disk): leave no child behind
            _terminate(process)
            _wait(process)
            raise
        returncode = _wait(process)
        with self._lock:
            self._process = None
        if self._canceled.is_set():
            raise _CanceledError
        if returncode != 0:
            self._log(f"== exit code {returncode}")
            if any("(from versions: none)" in line for line in tail) and not reachable(
                plan.index_url or PYPI
            ):  # pip names a refused connection only when it retries
                faults.add("network")
            raise InstallError(explain(plan, faults, tail, self.spec))

    def _follow(
        self, process: subprocess.Popen[str], plan: StepPlan, index: int, total: int
    ) -> tuple[set[str], list[str]]:
        """Every line into the log, what it names into the faults, progress to the queue."""
        assert process.stdout is not None
        parser, faults = PipProgress(), set()
        tail: collections.deque[str] = collections.deque(maxlen=40)
        for line in process.stdout:
            self._log(line.rstrip("\n"))
            tail.append(line)
            faults.add(fault(line))
            update = parser.feed(line)
            if update is not None:
                self._post(plan.step, index, total, update[0], update[1], update[2])
            elif plan.step is Step.DOCTOR and line.strip():
                self._post(plan.step, index, total, 0.5, line.strip())
        faults.discard("")
        return faults, list(tail)

    def _post(
        self, step: Step, index: int, total: int, part: float, text: str, package: str = ""
    ) -> None:
        fraction = (index - 1 + part) / total
        self.messages.put(Progress(step, index, total, fraction, text, package))

    def _log(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{line}\n")

    def _os_error_sentence(self, error: OSError) -> str:
        if error.errno == errno.ENOSPC:
            return disk_full_sentence(self.spec.target, free_space_needed(self.spec))
        return f"The install could not use {error.filename or self.spec.target}: {error.strerror or error}"


def _nvidia_smi() -> str | None:
    """nvidia-smi's output, or None where there is no working NVIDIA driver."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        done = subprocess.run([command], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _session_args() -> dict:
    # Its own process group, so a cancel reaches pip's own children (build backends) too.
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _terminate(process: subprocess.Popen[str]) -> None:
    try:
        if os.name == "nt":
            process.terminate()
        else:
            os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(process: subprocess.Popen[str]) -> int:
    try:
        return process.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()  # it ignored the terminate
        return process.wait()
