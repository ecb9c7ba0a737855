"""Which backend to talk to: a local one the add-on starts (or reuses), or a remote URL + token.

Plain values in, a Connection out. Blocking (it may start a process and wait for it): call it from
a worker thread, or from a background-mode operator.
"""

from __future__ import annotations

import enum
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .http import BackendClient, BackendUnreachable, Connection, api_mismatch
from .launcher import LaunchError, LaunchSpec, ensure_backend, find_running, stop
from .sizing import DEFAULT_SHORT_SIDE, WAN_SHORT_SIDE


class BackendMode(enum.StrEnum):
    LOCAL = "LOCAL"
    REMOTE = "REMOTE"


@dataclass(frozen=True)
class BackendConfig:
    mode: BackendMode
    root: Path  # the extension's folder: holds the `backend` package
    data_dir: Path
    models_dir: Path
    python: Path | None = None  # None: the root's .venv, if there is one
    url: str = ""
    token: str = ""
    fingerprint: str = ""  # a remote backend's self-signed certificate (SHA-256)
    allow_unencrypted: bool = False  # the token over plain HTTP to a remote backend
    device: str = "auto"
    extra_models: tuple[Path, ...] = ()  # more models folders the backend scans, read-only
    timeout: float = 30.0
    start_timeout: float = 120.0

    def launch_spec(self) -> LaunchSpec:
        python = self.python or default_python(self.root)
        if python is None:
            raise LaunchError(
                "no backend Python is set: in the add-on preferences, choose the Python"
                " interpreter of the environment where the backend's packages are installed"
            )
        return LaunchSpec(
            python=python,
            root=self.root,
            data_dir=self.data_dir,
            models_dir=self.models_dir,
            device=self.device,
            extra_args=tuple(a for p in self.extra_models for a in ("--extra-models", str(p))),
        )


def default_python(root: Path) -> Path | None:
    """The interpreter of a virtual environment inside the extension folder, if there is one."""
    for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return candidate
    return None


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def connect(config: BackendConfig, start: bool = True) -> Connection:
    """A connection to the configured backend, starting a local one when `start` is true.

    Raises LaunchError or BackendUnreachable with a sentence the user can act on.
    """
    if config.mode is BackendMode.REMOTE:
        url = config.url.strip()
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise BackendUnreachable(
                f"the backend URL {url!r} is not an http:// or https:// address; set it in the"
                " add-on preferences"
            )
        if not config.token.strip():
            raise BackendUnreachable("a remote backend needs its token: set it in the preferences")
        return Connection(
            url,
            config.token.strip(),
            timeout=config.timeout,
            fingerprint=config.fingerprint.strip(),
            allow_unencrypted=config.allow_unencrypted,
        )
    if start:
        running = ensure_backend(config.launch_spec(), timeout=config.start_timeout)
    else:
        running = find_running(config.data_dir)
        if running is None:
            raise BackendUnreachable(
                f"no local backend is running for the data folder {config.data_dir}; start it"
                " from the Backend panel"
            )
    return Connection(
        running.connection.url,
        running.connection.token,
        timeout=config.timeout,
        fingerprint=running.connection.fingerprint,
    )


def stop_local(config: BackendConfig) -> bool:
    """Stop the local backend on the configured data folder; False if none was running."""
    return stop(config.data_dir)


STYLIZE_ENGINE = "animatediff"
WAN_ENGINE = WAN_KIND = "wan_vace"  # the engine and its model kind share the name
NOT_NAMES = frozenset({"working_size", "wan_working_size", "wan_folder"})


@dataclass(frozen=True)
class ModelChoices:
    """Installed model names the scene settings can choose from, per kind (from /v1/models),
    the short side each stylize engine works at, and where Wan2.1-VACE models go."""

    checkpoints: tuple[str, ...] = ()
    motion_adapters: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    sparsectrls: tuple[str, ...] = ()
    ip_adapters: tuple[str, ...] = ()
    image_encoders: tuple[str, ...] = ()
    wan_vaces: tuple[str, ...] = ()
    # short side in pixels the stylize engines work at (the backend says it per engine)
    working_size: int = DEFAULT_SHORT_SIDE
    wan_working_size: int = WAN_SHORT_SIDE
    wan_folder: str = ""  # the backend's folder for Wan2.1-VACE models; "": not said

    @classmethod
    def name_kinds(cls) -> tuple[str, ...]:
        """The fields that hold model names."""
        return tuple(f.name for f in fields(cls) if f.name not in NOT_NAMES)

    @classmethod
    def from_listing(cls, models: Any) -> ModelChoices:
        listing = models if isinstance(models, dict) else {}
        installed = listing.get("installed", {})

        def names(kind: str) -> tuple[str, ...]:
            entries = installed.get(kind, []) if isinstance(installed, dict) else []
            return tuple(sorted({str(e["name"]) for e in entries if isinstance(e, dict)}))

        return cls(
            names("checkpoint"),
            names("motion_adapter"),
            names("lora"),
            names("sparsectrl"),
            names("ip_adapter"),
            names("image_encoder"),
            names(WAN_KIND),
            engine_working_size(listing, STYLIZE_ENGINE),
            engine_working_size(listing, WAN_ENGINE),
            kind_folder(listing, WAN_KIND),
        )

    def working_size_for(self, engine: str) -> int:
        """The short side the stylize `engine` works at."""
        return self.wan_working_size if engine == WAN_ENGINE else self.working_size


def engine_working_size(listing: Any, engine: str) -> int:
    """The working size the backend gives for `engine` (`engines.<engine>.working_size` in
    /v1/models), or the engine's usual one (SD1.5's 512, Wan's 480) from a backend that does
    not say."""
    engines = listing.get("engines") if isinstance(listing, dict) else None
    entry = engines.get(engine) if isinstance(engines, dict) else None
    size = entry.get("working_size") if isinstance(entry, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and 64 <= size <= 4096:
        return size
    return WAN_SHORT_SIDE if engine == WAN_ENGINE else DEFAULT_SHORT_SIDE


def kind_folder(listing: Any, kind: str) -> str:
    """Where the backend looks for models of `kind` (its models folder and the kind's
    recommended sub-folder), or "" when the listing does not say."""
    root, layout = listing.get("root"), listing.get("layout")
    folder = layout.get(kind) if isinstance(layout, dict) else None
    if not (isinstance(root, str) and root and isinstance(folder, str) and folder):
        return ""
    return f"{root.rstrip('/')}/{folder}"


def check(connection: Connection) -> list[str]:
    """Health and models of a backend, as lines a user can act on."""
    return check_models(connection)[0]


def check_models(connection: Connection) -> tuple[list[str], ModelChoices]:
    """`check()`, plus the model names to offer in the settings."""
    client = BackendClient(connection)
    health = client.health()
    models = client.models(rescan=True)  # the user asked: models may have been added
    return describe(health, models, connection.url), ModelChoices.from_listing(models)


def describe(health: dict[str, Any], models: dict[str, Any], url: str = "") -> list[str]:
    lines = [
        f"Backend {health.get('version', '?')} (API {health.get('api', '?')})"
        f" on {health.get('device', '?')}"
    ]
    mismatch = api_mismatch(health, url)
    if mismatch is not None:
        lines.append(mismatch[0].upper() + mismatch[1:])
    pipelines = models.get("pipelines", {}) if isinstance(models, dict) else {}
    for kind, info in sorted(health.get("pipelines", {}).items()):
        if not info.get("available"):
            lines.append(f"{kind}: unavailable — {info.get('error') or 'no reason given'}")
            continue
        model_info = pipelines.get(kind, {})
        ready_modes = [m for m, v in model_info.get("modes", {}).items() if v.get("ready")]
        if model_info.get("ready", True):
            lines.append(f"{kind}: ready")
        elif ready_modes:
            lines.append(
                f"{kind}: ready for {', '.join(ready_modes)};"
                f" for {model_info.get('mode', 'the rest')}:"
            )
        else:
            lines.append(f"{kind}: models missing:")
        for missing in model_info.get("missing", []) if not model_info.get("ready", True) else []:
            lines.append(f"  {missing}")
    refused = models.get("refused", []) if isinstance(models, dict) else []
    for item in refused:
        lines.append(f"refused {item.get('path')}: {item.get('reason')}")
    return lines
