"""Add-on preferences: which backend to use (a local one the add-on starts, or a URL + token),
where models and the backend's data live."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import state
from .client.backend import BackendConfig, BackendMode, default_python, is_loopback
from .client.installer import TORCH_VERSION

ROOT = Path(__file__).resolve().parent  # the extension's folder; holds the `backend` package


class FramesmithPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: EnumProperty(
        name="Backend",
        items=(
            ("LOCAL", "Local", "Start a backend on this computer with the Python chosen below"),
            ("REMOTE", "Remote", "Connect to a running backend by URL and token"),
        ),
        default="LOCAL",
    )
    python_path: StringProperty(
        name="Backend Python",
        description="Python interpreter of the environment with the backend's packages"
        " (torch, diffusers, ...). Empty: the .venv inside the extension folder, if any",
        subtype="FILE_PATH",
    )
    device: EnumProperty(
        name="Device",
        items=(
            ("auto", "Auto", "The first GPU if there is one, else the CPU"),
            ("cuda", "GPU", "The first CUDA GPU"),
            ("cpu", "CPU", "The CPU (slow, for small tests)"),
        ),
        default="auto",
    )
    url: StringProperty(name="URL", default="http://127.0.0.1:8765")
    token: StringProperty(name="Token", subtype="PASSWORD")
    fingerprint: StringProperty(
        name="Certificate Fingerprint",
        description="For an https:// backend with a self-signed certificate: the SHA-256"
        " fingerprint it printed at start (AB:CD:...). Empty: the system's trusted certificates",
    )
    allow_unencrypted: BoolProperty(
        name="Allow Unencrypted (unsafe)",
        description="Send the token over plain http:// to a backend on another computer: anyone"
        " on the network can read it and then drive the backend",
        default=False,
    )
    models_dir: StringProperty(
        name="Models Folder",
        description="Your model weights (diffusers folders or .safetensors files)."
        " Empty: a folder in Blender's extension data",
        subtype="DIR_PATH",
    )
    extra_models_dirs: StringProperty(
        name="Extra Models Folders",
        description="More folders of models the local backend uses read-only, such as a ComfyUI"
        " or A1111 models folder, so nothing is copied; separate several with ';'. A running"
        " backend sees a change once stopped and started again",
    )
    background_render: BoolProperty(
        name="Render in a Background Process",
        description="Interactive takes render their frames in a background Blender process on a"
        " saved copy of the scene, so Blender stays responsive. Off: one frame per timer tick"
        " in this Blender (it freezes while each frame renders)",
        default=True,
    )
    data_dir: StringProperty(
        name="Data Folder",
        description="Where the local backend keeps its jobs and logs."
        " Empty: a folder in Blender's extension data",
        subtype="DIR_PATH",
    )

    install_torch_build: EnumProperty(
        name="Torch Build",
        description="Which torch Install Backend puts into the environment",
        items=(
            (
                "auto",
                "Auto",
                "CUDA where an NVIDIA driver is found, Apple's build on a Mac, else CPU",
            ),
            ("cuda", "NVIDIA CUDA", "The CUDA build that matches the NVIDIA driver"),
            ("cpu", "CPU", "The CPU build: small download, slow generation"),
            ("default", "Package Index", "Whatever the package index serves (Apple: Metal)"),
        ),
        default="auto",
    )
    install_torch_version: StringProperty(
        name="Torch Version",
        description="The torch release to install (tested with this one). Empty: no torch step,"
        " for a requirements file that brings its own",
        default=TORCH_VERSION,
    )
    install_index_url: StringProperty(
        name="Package Index",
        description="Where the backend's packages come from (a mirror's simple/ URL)."
        " Empty: PyPI, or the index your pip configuration names",
    )
    install_torch_index_url: StringProperty(
        name="Torch Index",
        description="Where torch comes from. Empty: PyTorch's own index for the chosen build",
    )
    install_progress: FloatProperty(
        name="Install Progress", min=0.0, max=1.0, subtype="FACTOR", options={"SKIP_SAVE"}
    )
    install_message: StringProperty(name="Install Message")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "LOCAL":
            layout.prop(self, "python_path")
            python = self.python_path or default_python(ROOT)
            if not python:
                layout.label(
                    text="Install the backend below, or choose its environment's Python",
                    icon="ERROR",
                )
            self.draw_install(layout.box())
            layout.prop(self, "device")
            layout.prop(self, "models_dir", placeholder=str(models_dir(self)))
            layout.prop(self, "extra_models_dirs", placeholder="ComfyUI/models; A1111/models")
            layout.prop(self, "data_dir", placeholder=str(data_dir(self)))
        else:
            layout.prop(self, "url")
            layout.prop(self, "token")
            layout.prop(self, "fingerprint")
            unsafe = layout.row()
            unsafe.alert = True  # red: it sends the token in the clear
            unsafe.prop(self, "allow_unencrypted")
            if not is_loopback(self.url) and not bpy.app.online_access:
                layout.label(
                    text="Allow Online Access (Preferences > System) to reach this URL",
                    icon="ERROR",
                )
        layout.prop(self, "background_render")
        row = layout.row(align=True)
        row.operator("framesmith.backend_check", icon="CHECKMARK")
        if self.backend_mode == "LOCAL":
            row.operator("framesmith.backend_start", icon="PLAY")
            row.operator("framesmith.backend_stop", icon="SNAP_FACE")
        box = layout.box()
        for line in state.backend_status().lines:  # session state only: no network in draw()
            box.label(text=line)

    def draw_install(self, box: bpy.types.UILayout) -> None:
        row = box.row(align=True)
        if state.install().running:  # the bar says the step and the package in hand
            text = f"{self.install_progress:.0%} · {self.install_message}"
            row.progress(factor=self.install_progress, text=text)
            row.operator("framesmith.install_backend_cancel", text="", icon="CANCEL")
        else:
            row.operator("framesmith.install_backend", icon="IMPORT")
            if self.install_message:
                box.label(text=self.install_message)
        box.prop(self, "install_torch_build")
        box.prop(self, "install_torch_version")
        box.prop(self, "install_index_url", placeholder="PyPI")
        box.prop(self, "install_torch_index_url", placeholder="PyTorch's index for the build")


def get(context: bpy.types.Context | None = None) -> FramesmithPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def _user_dir(name: str) -> Path:
    return Path(bpy.utils.extension_path_user(__package__, path=name, create=True))


def backend_env_dir() -> Path:
    """Where Install Backend makes the backend's environment."""
    return _user_dir("backend-env")


def data_dir(prefs: FramesmithPreferences) -> Path:
    if prefs.data_dir:
        return Path(bpy.path.abspath(prefs.data_dir))
    return _user_dir("backend")


def models_dir(prefs: FramesmithPreferences) -> Path:
    if prefs.models_dir:
        return Path(bpy.path.abspath(prefs.models_dir))
    return _user_dir("models")


def backend_config(prefs: FramesmithPreferences) -> BackendConfig:
    python = Path(bpy.path.abspath(prefs.python_path)) if prefs.python_path else None
    return BackendConfig(
        mode=BackendMode(prefs.backend_mode),
        root=ROOT,
        data_dir=data_dir(prefs),
        models_dir=models_dir(prefs),
        python=python,
        url=prefs.url,
        token=prefs.token,
        fingerprint=prefs.fingerprint,
        allow_unencrypted=prefs.allow_unencrypted,
        device=prefs.device,
        extra_models=extra_models_dirs(prefs),
    )


def extra_models_dirs(prefs: FramesmithPreferences) -> tuple[Path, ...]:
    """The Extra Models Folders preference as absolute paths (';' between folders)."""
    parts = (p.strip() for p in prefs.extra_models_dirs.split(";"))
    return tuple(Path(bpy.path.abspath(p)) for p in parts if p)


def network_refusal(prefs: FramesmithPreferences) -> str | None:
    """Why Blender's settings forbid reaching the backend, or None."""
    if prefs.backend_mode == "REMOTE" and not is_loopback(prefs.url) and not bpy.app.online_access:
        return (
            f"Blender's online access is off, so the backend at {prefs.url} cannot be"
            " reached; allow it in Preferences > System > Network"
        )
    return None


classes = (FramesmithPreferences,)

register, unregister = bpy.utils.register_classes_factory(classes)
