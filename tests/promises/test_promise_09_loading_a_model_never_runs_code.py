"""Promise 9: loading a model never runs code.

Pickles disguised as `.safetensors` / `.SAFETENSORS` (plain pickles of every protocol, and the
zip archive torch.save writes) are recognised by their content and refused, alone and inside a
diffusers model folder; a job naming one cannot start; the payload, which would create a canary
file if it were ever unpickled, never runs. And a lint over the whole repository: nothing calls
torch.load without weights_only=True.
"""

from __future__ import annotations

import ast
import io
import pickle
import shutil
import zipfile
from pathlib import Path

from tests.backend.images import png_bytes
from tests.backend.server import REPO
from tests.promises.support import square_keys

SKIP_DIRS = {
    ".venv",
    ".venv-blender",
    ".venv-blender5",
    ".git",
    "build",
    "demo-output",
    "node_modules",
}


class Payload:
    """Unpickling this creates the canary file: proof that code ran."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (open, (str(self.canary), "w"))


def torch_zip(pickled: bytes) -> bytes:
    """The layout torch.save writes: a zip holding archive/data.pkl."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def test_pickles_disguised_as_safetensors_are_refused_by_content(
    make_backend, tiny_models: Path, tmp_path: Path
) -> None:
    from backend.models.tiny import CONTROLNET_DEPTH_FOLDER

    canary = tmp_path / "canary"
    payload = Payload(canary)
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    disguised = {
        "checkpoints/evil-p2.safetensors": pickle.dumps(payload, protocol=2),
        "checkpoints/evil-p5.safetensors": pickle.dumps(payload, protocol=5),
        "checkpoints/EVIL-UPPER.SAFETENSORS": pickle.dumps(payload, protocol=4),
        "checkpoints/evil-zip.safetensors": torch_zip(pickle.dumps(payload)),
        "lora/evil-lora.Safetensors": pickle.dumps(payload, protocol=3),
    }
    for rel, data in disguised.items():
        (models / rel).write_bytes(data)
    text_pickle = models / "checkpoints" / "evil-p0.safetensors"
    text_pickle.write_bytes(pickle.dumps(payload, protocol=0))
    # a diffusers folder whose weights file is a pickle under the safetensors name
    folder = models / "controlnet" / "evil-controlnet"
    shutil.copytree(models / CONTROLNET_DEPTH_FOLDER, folder)
    for weights in folder.glob("*.safetensors"):
        weights.write_bytes(pickle.dumps(payload))

    b = make_backend(models=models).start()
    with b.client() as c:
        listing = c.get("/v1/models").json()
        installed = {e["name"] for entries in listing["installed"].values() for e in entries}
        assert "checkpoints/tiny-sd15-ldm" in installed
        assert listing["pipelines"]["stylize"]["ready"] is True, "the real models still work"
        assert not any("evil" in n.lower() for n in installed), installed
        refused = {Path(r["path"]).name: r["reason"] for r in listing["refused"]}
        for rel in disguised:
            reason = refused.get(Path(rel).name, "")
            assert "pickle" in reason, (rel, refused)
        assert text_pickle.name in refused, "a protocol-0 pickle is no valid safetensors either"
        assert any("evil-controlnet" in r["path"] for r in listing["refused"]), refused

        beauty = png_bytes(square_keys({0: 8.0}, 64, 64)[0])
        for name in ("checkpoints/evil-p2", "EVIL-UPPER", "checkpoints/evil-zip"):
            body = {"kind": "stylize", "frames": [0], "width": 64, "height": 64}
            params = {"mode": "per_frame", "strength": 0.5, "steps": 4, "checkpoint": name}
            jid = c.post("/v1/jobs", json={**body, "params": params}).json()["id"]
            assert c.put(f"/v1/jobs/{jid}/inputs/beauty/0", content=beauty).status_code == 200
            r = c.post(f"/v1/jobs/{jid}/start")
            assert r.status_code == 400, r.text
            assert "refused" in r.json()["detail"] and "pickle" in r.json()["detail"], r.text
    assert not canary.exists(), "a pickle was loaded: its payload ran"


# ---- lint: torch.load only with weights_only=True -------------------------------------------


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Calls of torch.load (however imported or aliased) without weights_only=True."""
    tree = ast.parse(source, filename)
    torch_names = {"torch"}  # names bound to the torch module
    load_names: set[str] = set()  # names bound to torch.load itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch":
                    torch_names.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
            for alias in node.names:
                if alias.name == "load":
                    load_names.add(alias.asname or "load")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        is_torch_load = (
            isinstance(f, ast.Attribute)
            and f.attr == "load"
            and (
                (isinstance(f.value, ast.Name) and f.value.id in torch_names)
                or (isinstance(f.value, ast.Attribute) and f.value.attr == "serialization")
            )
        ) or (isinstance(f, ast.Name) and f.id in load_names)
        if not is_torch_load:
            continue
        safe = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if not safe:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def python_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*.py"):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts):
            out.append(path)
    return out


def test_the_lint_catches_unsafe_torch_load() -> None:
    bad = [
        "import torch\ntorch.load('m.pt')",
        "import torch as t\nt.load('m.pt', weights_only=False)",
        "from torch import load\nload('m.pt')",
        "from torch import load as l\nl('m.pt', map_location='cpu')",
        "import torch\ntorch.serialization.load('m.pt')",
        "import torch\nx = torch.load(\n    'm.pt',\n    map_location='cpu',\n)",
        "import torch\nopts = {'weights_only': True}\ntorch.load('m.pt', **opts)",
    ]
    good = [
        "import torch\ntorch.load('m.pt', weights_only=True)",
        "import torch\ntorch.load(\n    'm.pt',\n    map_location='cpu',\n    weights_only=True,\n)",
        "import json\njson.load(open('x'))",
    ]
    for src in bad:
        assert unsafe_loads(src), src
    for src in good:
        assert unsafe_loads(src) == [], src


def test_nothing_calls_torch_load_without_weights_only() -> None:
    files = python_files(REPO)
    assert len(files) > 50 and any(p.parts[-2:] == ("backend", "worker.py") for p in files)
    offenders = []
    for path in files:
        offenders += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert offenders == []
