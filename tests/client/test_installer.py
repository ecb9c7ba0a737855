"""The backend installer: pip's output read into progress, the state that lets a re-run continue,
the sentences for known faults (caused for real where a test can), cancel, and one real install
from requirements/backend.txt through the code the add-on's button runs."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from client.http import BackendClient
from client.installer import (
    LOG_FILE,
    STATE_FILE,
    Canceled,
    Failed,
    Finished,
    Installer,
    InstallSpec,
    Message,
    PipProgress,
    Settings,
    Step,
    StepPlan,
    TorchBuild,
    cuda_tag,
    env_python,
    explain,
    fault,
    load_state,
    package_name,
    plan_steps,
    remote_indexes,
    resolve_build,
    torch_index,
)
from client.launcher import LaunchSpec, launch, stop
from tests.backend.server import REPO

# The doctor of a stand-in extension: a line, then a long wait where a file named `slow` exists.
STAND_IN_DOCTOR = """\
import os, sys, time
from pathlib import Path
print("Framesmith backend stand-in", flush=True)
Path(sys.argv[0]).resolve().parent.joinpath("doctor.pid").write_text(str(os.getpid()))
if Path("slow").exists():
    print("checking slowly", flush=True)
    time.sleep(120)
print("pipeline inbetween: available", flush=True)
"""

# Lines pip 23 wrote during the real install below.
PIP_LINES = """\
Collecting diffusers==0.42.1 (from -r requirements/backend.txt (line 2))
  Downloading diffusers-0.42.1-py3-none-any.whl (6.4 MB)
Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
Requirement already satisfied: typing-extensions>=4.10.0 in ./env/lib/python3.11/site-packages (from torch==2.13.0) (4.16.0)
Collecting uvicorn[standard] (from -r requirements/backend.txt (line 10))
  Using cached uvicorn-0.44.0-py3-none-any.whl (68 kB)
WARNING: Location 'file:///opt/pypi/simple/torch/' is ignored: it is neither a file nor a directory.
Installing collected packages: mpmath, typing-extensions, sympy, torch
Successfully installed mpmath-1.3.0 sympy-1.14.0 torch-2.13.0+cpu typing-extensions-4.16.0
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """An extension root whose requirements need nothing from a network (pip is in every new
    environment) and whose `backend doctor` is a few lines of Python."""
    root = tmp_path / "extension"
    (root / "requirements").mkdir(parents=True)
    (root / "requirements" / "backend.txt").write_text("pip\n")
    (root / "backend").mkdir()
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(STAND_IN_DOCTOR)
    return root


@pytest.fixture
def offline_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """pip without this machine's configuration (its local wheel folders would answer for any
    index) and without retries; the URL of an empty local index."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-index").mkdir()
    return (tmp_path / "empty-index").as_uri()


def spec_for(root: Path, target: Path, **settings: object) -> InstallSpec:
    defaults: dict[str, object] = {"torch_version": ""}  # no torch step: nothing to download
    return InstallSpec(Path(sys.executable), target, root, Settings(**{**defaults, **settings}))


def drain(installer: Installer, timeout: float = 120.0) -> list[Message]:
    """Every message of a started install, up to and including the final one."""
    seen: list[Message] = []
    deadline = time.monotonic() + timeout
    while not seen or not isinstance(seen[-1], Finished | Failed | Canceled):
        seen.append(installer.messages.get(timeout=max(0.1, deadline - time.monotonic())))
    return seen


def texts(messages: list[Message]) -> list[str]:
    return [f"{m.index}/{m.total} {m.text}" for m in messages if hasattr(m, "text")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure parts --------------------------------------------------------------------------------


def test_pip_output_becomes_packages_and_a_growing_fraction() -> None:
    parser = PipProgress()
    updates = [parser.feed(line) for line in PIP_LINES.splitlines()]
    shown = [(text, package) for _, text, package in filter(None, updates)]
    assert shown == [
        ("Collecting diffusers", "diffusers"),
        ("Downloading diffusers (6.4 MB)", "diffusers"),
        ("Unpacking torch", "torch"),
        ("Already installed typing-extensions", "typing-extensions"),
        ("Collecting uvicorn", "uvicorn"),
        ("Cached uvicorn (68 kB)", "uvicorn"),
        ("Installing 4 packages", "mpmath, typing-extensions, sympy"),
        ("Installed", ""),
    ]
    assert updates[6] is None  # a warning says nothing about progress
    fractions = [u[0] for u in updates if u is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_package_names_from_requirements_wheels_and_paths() -> None:
    assert package_name("transformers<6,>=5") == "transformers"
    assert package_name("opencv_python_headless-5.1.0.95-cp37-abi3-manylinux.whl") == (
        "opencv_python_headless"
    )
    assert package_name("/opt/pypi/files/numpy-2.4.6-cp311-cp311-linux.whl") == "numpy"
    assert package_name("uvicorn[standard]") == "uvicorn"


def test_the_torch_build_for_this_machine() -> None:
    smi = "| NVIDIA-SMI 570.86   Driver Version: 570.86   CUDA Version: 12.8 |"
    assert resolve_build(TorchBuild.AUTO, "Linux", smi) is TorchBuild.CUDA
    assert resolve_build(TorchBuild.AUTO, "Windows", None) is TorchBuild.CPU
    assert resolve_build(TorchBuild.AUTO, "Darwin", None) is TorchBuild.DEFAULT
    assert resolve_build(TorchBuild.CPU, "Linux", smi) is TorchBuild.CPU
    assert cuda_tag(smi) == "cu128"
    assert cuda_tag("CUDA Version: 13.1") == "cu130"
    assert cuda_tag("CUDA Version: 12.7") == "cu126"
    assert cuda_tag("CUDA Version: 11.8") == "cu126"  # older drivers: the oldest build offered
    settings = Settings()
    assert torch_index(settings, TorchBuild.CUDA, smi).endswith("/whl/cu128")
    assert torch_index(settings, TorchBuild.CPU, None).endswith("/whl/cpu")
    assert torch_index(settings, TorchBuild.DEFAULT, None) == ""
    mirror = Settings(torch_index_url="https://mirror.example/torch")
    assert torch_index(mirror, TorchBuild.CPU, None) == "https://mirror.example/torch"


def test_steps_pin_torch_in_every_pip_call(stand_in: Path, tmp_path: Path) -> None:
    spec = InstallSpec(
        Path(sys.executable),
        tmp_path / "env",
        stand_in,
        Settings(torch_version="2.13.0", index_url="https://mirror.example/simple"),
    )
    venv, torch, requirements, doctor = plan_steps(spec, "https://download.pytorch.org/whl/cpu")
    assert venv.argv == (sys.executable, "-m", "venv", str(tmp_path / "env"))
    assert torch.argv[-4:] == ("--index-url", "https://download.pytorch.org/whl/cpu",
                               "--extra-index-url", "https://mirror.example/simple")  # fmt: skip
    assert "torch==2.13.0" in torch.argv and "torch==2.13.0" in requirements.argv
    assert requirements.argv[-2:] == ("--index-url", "https://mirror.example/simple")
    assert doctor.argv[1:] == ("-m", "backend", "doctor") and doctor.key == ""
    assert len({venv.key, torch.key, requirements.key}) == 3


def test_only_non_local_indexes_need_blenders_online_access() -> None:
    assert remote_indexes(Settings(torch_build=TorchBuild.DEFAULT)) == [""]  # PyPI
    assert len(remote_indexes(Settings(torch_build=TorchBuild.CPU))) == 2
    local = Settings(torch_version="", index_url="file:///srv/wheels/simple")
    assert remote_indexes(local) == []
    assert remote_indexes(Settings(torch_version="", index_url="http://127.0.0.1:8080/")) == []


def test_known_faults_in_pip_output_become_sentences(tmp_path: Path) -> None:
    spec = InstallSpec(Path(sys.executable), tmp_path / "env", tmp_path)
    pip_step = StepPlan(Step.REQUIREMENTS, (), "", "k")
    disk = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
    assert fault(disk) == "disk"
    said = explain(pip_step, {"disk", "network"}, [disk], spec)
    assert said.startswith(f"The disk holding {tmp_path / 'env'} is full: free at least 3 GB")
    dns = "Failed to establish a new connection: [Errno -3] Temporary failure in name resolution"
    assert fault(dns) == "network"
    assert "Could not reach the package index (PyPI)" in explain(pip_step, {"network"}, [], spec)
    other = explain(pip_step, set(), ["ERROR: Could not build wheels for x", ""], spec)
    assert other == (
        "Installing the backend's packages failed: ERROR: Could not build wheels for x"
        f" (the whole output is in {tmp_path / 'env' / LOG_FILE})"
    )


# --- real faults, resume and cancel ------------------------------------------------------------


@pytest.mark.usefixtures("offline_pip")
def test_a_failed_step_is_continued_and_changed_requirements_are_redone(
    stand_in: Path, tmp_path: Path, offline_pip: str
) -> None:
    target = tmp_path / "env"
    requirements = stand_in / "requirements" / "backend.txt"
    requirements.write_text("framesmith-no-such-package\n")
    spec = spec_for(stand_in, target, index_url=offline_pip)

    first = drain(_started(spec))
    assert isinstance(first[-1], Failed), first[-1]
    assert first[-1].message.startswith("Installing the backend's packages failed: ERROR: No ")
    assert set(load_state(target)) == {"venv"}  # what finished is recorded, nothing else
    made = env_python(target).stat().st_mtime_ns

    requirements.write_text("pip\n")
    second = drain(_started(spec))
    assert isinstance(second[-1], Finished) and second[-1].python == env_python(target)
    assert texts(second)[0] == "1/3 Already done"
    assert "2/3 Already installed pip" in texts(second)
    assert "3/3 pipeline inbetween: available" in texts(second)
    assert env_python(target).stat().st_mtime_ns == made  # the environment was not made again
    assert set(load_state(target)) == {"venv", "requirements"}

    third = drain(_started(spec))
    assert texts(third)[:2] == ["1/3 Already done", "2/3 Already done"]
    requirements.write_text("pip  # the add-on was updated\n")
    fourth = drain(_started(spec))
    assert texts(fourth)[0] == "1/3 Already done"
    assert "2/3 Installing the backend's packages" in texts(fourth)  # the new file is installed
    assert isinstance(fourth[-1], Finished)
    log = (target / LOG_FILE).read_text()
    assert log.count("== step 1/3") == 1 and log.count("== step 2/3") == 3
    assert (target / STATE_FILE).is_file()


@pytest.mark.usefixtures("offline_pip")
def test_an_unreachable_index_is_named(stand_in: Path, tmp_path: Path) -> None:
    """Nothing listens on the port: pip's connection is refused, as with no network."""
    unreachable = f"http://127.0.0.1:{free_port()}/simple"
    spec = spec_for(
        stand_in,
        tmp_path / "env",
        torch_version="2.13.0",
        torch_build=TorchBuild.CPU,
        torch_index_url=unreachable,
    )
    started = time.monotonic()
    messages = drain(_started(spec))
    assert isinstance(messages[-1], Failed)
    assert messages[-1].message.startswith(f"Could not reach the package index ({unreachable}):")
    assert "press Install Backend again to continue" in messages[-1].message
    assert texts(messages)[-1].startswith("2/4")  # the torch step
    (stand_in / "requirements" / "backend.txt").write_text("framesmith-test-package\n")
    again = spec_for(stand_in, tmp_path / "env", index_url=unreachable)
    messages = drain(_started(again))
    assert isinstance(messages[-1], Failed)
    assert messages[-1].message.startswith(f"Could not reach the package index ({unreachable}):")
    assert time.monotonic() - started < 90


def test_a_python_without_venv_is_named(stand_in: Path, tmp_path: Path) -> None:
    """A real interpreter whose standard library lacks ensurepip, as distributions ship Python
    without their python3-venv package."""
    python = _python_without_ensurepip(tmp_path / "python")
    spec = InstallSpec(python, tmp_path / "env", stand_in, Settings(torch_version=""))
    messages = drain(_started(spec))
    assert isinstance(messages[-1], Failed)
    assert messages[-1].message.startswith(
        f"This Python ({python}) cannot create virtual environments: its venv or ensurepip"
    )
    assert "ensurepip" in (tmp_path / "env" / LOG_FILE).read_text()


def test_too_little_free_space_stops_before_anything_is_installed(
    stand_in: Path, tmp_path: Path
) -> None:
    spec = InstallSpec(
        Path(sys.executable), tmp_path / "env", stand_in, Settings(torch_version=""), 1e9
    )
    (message,) = drain(_started(spec))
    assert isinstance(message, Failed)
    assert message.message.startswith(f"The disk holding {tmp_path / 'env'} is full: free")
    assert not env_python(tmp_path / "env").exists()


def test_a_missing_python_is_named(stand_in: Path, tmp_path: Path) -> None:
    spec = InstallSpec(tmp_path / "no-python", tmp_path / "env", stand_in)
    (message,) = drain(_started(spec))
    assert isinstance(message, Failed) and "no-python" in message.message


@pytest.mark.usefixtures("offline_pip")
def test_cancel_ends_the_running_step_and_a_rerun_continues(stand_in: Path, tmp_path: Path) -> None:
    (stand_in / "slow").write_text("")
    spec = spec_for(stand_in, tmp_path / "env")
    installer = _started(spec)
    seen: list[Message] = []
    while not seen or getattr(seen[-1], "text", "") != "checking slowly":
        seen.append(installer.messages.get(timeout=60))
    doctor = int((stand_in / "backend" / "doctor.pid").read_text())
    asked = time.monotonic()
    installer.cancel()
    rest = drain(installer, timeout=15)
    assert isinstance(rest[-1], Canceled) and time.monotonic() - asked < 5
    assert installer.join(5)
    with pytest.raises(ProcessLookupError):
        os.kill(doctor, 0)  # the child is gone (reaped by the installer)

    (stand_in / "slow").unlink()
    again = drain(_started(spec))
    assert texts(again)[:2] == ["1/3 Already done", "2/3 Already done"]
    assert isinstance(again[-1], Finished)


def _started(spec: InstallSpec) -> Installer:
    installer = Installer(spec)
    installer.start()
    return installer


def _python_without_ensurepip(folder: Path) -> Path:
    """A copy of this interpreter over a standard library with every module but ensurepip."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    if os.name == "nt" or not (base / "bin" / version).is_file():
        pytest.skip("needs a POSIX Python laid out as prefix/bin and prefix/lib")
    (folder / "bin").mkdir(parents=True)
    stdlib = folder / "lib" / version
    stdlib.mkdir(parents=True)
    for entry in (base / "lib" / version).iterdir():
        if entry.name != "ensurepip":
            (stdlib / entry.name).symlink_to(entry)
    python = folder / "bin" / version
    shutil.copy2(base / "bin" / version, python)
    return python


# --- the real thing ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_install_from_the_requirements_starts_the_backend(tmp_path: Path) -> None:
    """The button's code end to end: this Python → venv → torch pinned as the Makefile pins it
    (`pip install torch==2.13.0`, the CPU build on these machines) → requirements/backend.txt →
    doctor; then the launcher starts the backend from the new environment and it answers."""
    spec = InstallSpec(
        Path(sys.executable),
        tmp_path / "env",
        REPO,
        Settings(torch_build=TorchBuild.DEFAULT, torch_version="2.13.0"),
    )
    started = time.monotonic()
    messages = drain(_started(spec), timeout=900)
    took = time.monotonic() - started
    assert isinstance(messages[-1], Finished), messages[-1]
    print(f"real install: {took:.0f} s")
    assert "4/4 pipeline inbetween: available" in texts(messages)
    assert {m.package for m in messages if getattr(m, "package", "")} >= {"torch", "diffusers"}

    launch_spec = LaunchSpec(
        messages[-1].python, REPO, tmp_path / "data", tmp_path / "models", device="cpu"
    )
    running = launch(launch_spec, timeout=120)
    try:
        health = BackendClient(running.connection).health()
        assert health["api"] == "v1" and health["device"].startswith("cpu")
    finally:
        stop(launch_spec.data_dir)
        os.waitpid(running.pid, 0)
