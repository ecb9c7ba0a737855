"""backend.models: content-based registry, pickle refusal, offline loading, tiny models, cache."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from backend.models.catalogue import ModelKind
from backend.models.registry import ModelRegistry, Need

REPO = Path(__file__).resolve().parents[2]

# (name in the tiny set, kind, layout, controlnet_type)
TINY_EXPECTED = {
    "checkpoints/tiny-sd15": (ModelKind.CHECKPOINT, "diffusers", None),
    "checkpoints/tiny-sd15-ldm": (ModelKind.CHECKPOINT, "single_file", None),
    "controlnet/tiny-controlnet-depth": (ModelKind.CONTROLNET, "diffusers", "depth"),
    "controlnet/tiny-controlnet-normal": (ModelKind.CONTROLNET, "single_file", "normal"),
    "controlnet/tiny-controlnet-lineart": (ModelKind.CONTROLNET, "single_file", "lineart"),
    "motion/tiny-motion-adapter": (ModelKind.MOTION_ADAPTER, "diffusers", None),
    "motion/tiny-mm-sd-v15-v2": (ModelKind.MOTION_ADAPTER, "single_file", None),
    "sparsectrl/tiny-sparsectrl-rgb": (ModelKind.SPARSECTRL, "diffusers", "rgb"),
    "lora/tiny-lora": (ModelKind.LORA, "single_file", None),
    "ip_adapter/tiny-ip-adapter-sd15": (ModelKind.IP_ADAPTER, "single_file", None),
    "ip_adapter/image_encoder": (ModelKind.IMAGE_ENCODER, "diffusers", None),
}


@pytest.fixture(scope="module")
def registry(tiny_models: Path) -> ModelRegistry:
    return ModelRegistry(tiny_models).scan()


@pytest.fixture()
def models_copy(tiny_models: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(tiny_models, root)
    return root


def _kinds(reg: ModelRegistry) -> dict[str, tuple[ModelKind, str, str | None]]:
    return {e.name: (e.kind, e.layout, e.controlnet_type) for e in reg.entries}


# ---- offline --------------------------------------------------------------------------------


def test_loading_module_runs_offline() -> None:
    import huggingface_hub.constants
    from diffusers.utils import hub_utils

    import backend.models.loaders  # noqa: F401

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert hub_utils.HF_HUB_OFFLINE is True  # the copy diffusers took at import


def test_ensure_offline_refuses_a_hub_imported_online() -> None:
    code = (
        "import huggingface_hub.constants\n"
        "from backend.models.offline import OfflineError, ensure_offline\n"
        "try:\n    ensure_offline()\nexcept OfflineError:\n    raise SystemExit(7)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 7


# ---- tiny models ------------------------------------------------------------------------------


def test_tiny_models_are_small_and_deterministic(tiny_models: Path, tmp_path: Path) -> None:
    from backend.models.tiny import make_tiny_models

    again = tmp_path / "again"
    make_tiny_models(again)
    files = sorted(p.relative_to(tiny_models) for p in tiny_models.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (tiny_models / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert sum((tiny_models / rel).stat().st_size for rel in files) < 5_000_000


def test_shipped_tiny_tokenizer_matches_the_builder() -> None:
    from transformers import CLIPTokenizer

    from backend.models.tiny import TINY_SD, build_tiny_tokenizer

    shipped = CLIPTokenizer.from_pretrained(str(TINY_SD / "tokenizer"), local_files_only=True)
    built = build_tiny_tokenizer()
    text = "a red cube, spinning! Über 3 ☃"
    assert shipped(text).input_ids == built(text).input_ids
    assert shipped.model_max_length == 77


# ---- registry: recognition ------------------------------------------------------------------


def test_registry_recognises_every_tiny_model(registry: ModelRegistry) -> None:
    assert _kinds(registry) == TINY_EXPECTED
    assert registry.refused == ()
    single = registry.get("tiny-sd15-ldm")
    assert single.config == "tiny-sd15"
    assert all(e.size_bytes > 0 and e.path.is_relative_to(registry.root) for e in registry.entries)


def test_recognition_is_by_content_not_by_name(models_copy: Path) -> None:
    moves = {
        "checkpoints/tiny-sd15-ldm.safetensors": "lora/lora_unet_style.safetensors",
        "motion/tiny-mm-sd-v15-v2.safetensors": "checkpoints/v1-5-pruned.safetensors",
        "lora/tiny-lora.safetensors": "motion/mm_sd_v15_v2.safetensors",
        "controlnet/tiny-controlnet-normal.safetensors": "sparsectrl/sparsectrl.SAFETENSORS",
        "controlnet/tiny-controlnet-depth": "motion/animatediff-motion-adapter",
        "sparsectrl/tiny-sparsectrl-rgb": "controlnet/control_v11f1p_sd15_depth",
        "checkpoints/tiny-sd15": "lora/my-lora",
        "motion/tiny-motion-adapter": "x/y/z",
    }
    # a diffusers folder's weights file on its own is a single file of the same kind
    shutil.copy(
        models_copy / "sparsectrl/tiny-sparsectrl-rgb/diffusion_pytorch_model.safetensors",
        models_copy / "lora/sparse-weights.safetensors",
    )
    staging = models_copy.parent / "staging"
    for old, new in moves.items():
        (staging / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(models_copy / old, staging / new)
    for item in staging.iterdir():
        shutil.copytree(item, models_copy / item.name, dirs_exist_ok=True)
    found = _kinds(ModelRegistry(models_copy).scan())
    assert found["lora/lora_unet_style"] == (ModelKind.CHECKPOINT, "single_file", None)
    assert found["checkpoints/v1-5-pruned"] == (ModelKind.MOTION_ADAPTER, "single_file", None)
    assert found["motion/mm_sd_v15_v2"] == (ModelKind.LORA, "single_file", None)
    # metadata and sidecars beat misleading names
    assert found["sparsectrl/sparsectrl"] == (ModelKind.CONTROLNET, "single_file", "normal")
    assert found["motion/animatediff-motion-adapter"] == (
        ModelKind.CONTROLNET,
        "diffusers",
        "depth",
    )
    assert found["controlnet/control_v11f1p_sd15_depth"] == (
        ModelKind.SPARSECTRL,
        "diffusers",
        "rgb",
    )
    assert found["lora/my-lora"] == (ModelKind.CHECKPOINT, "diffusers", None)
    assert found["x/y/z"] == (ModelKind.MOTION_ADAPTER, "diffusers", None)
    assert found["lora/sparse-weights"] == (ModelKind.SPARSECTRL, "single_file", None)


def test_controlnet_type_from_sidecar_metadata_or_name(tiny_models: Path, tmp_path: Path) -> None:
    # The lineart file declares its type only in a sidecar; without it, names decide.
    src = tiny_models / "controlnet" / "tiny-controlnet-lineart.safetensors"
    root = tmp_path / "models"
    for rel in (
        "control_v11p_sd15_lineart.safetensors",
        "my_depth_model.safetensors",
        "normal/model.safetensors",
        "mystery.safetensors",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    shutil.copy(src, root / "declared.safetensors")
    (root / "declared.framesmith.json").write_text('{"controlnet_type": "Canny"}')
    found = {e.name: e.controlnet_type for e in ModelRegistry(root).scan().entries}
    assert found == {
        "control_v11p_sd15_lineart": "lineart",
        "my_depth_model": "depth",
        "normal/model": "normal",
        "mystery": None,
        "declared": "canny",
    }


# ---- registry: refusals ---------------------------------------------------------------------


class _Canary:
    """Unpickling this creates a file: proof that a pickle was (or was not) executed."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _write_torch_style_zip(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")


def test_pickles_are_refused_and_never_unpickled(models_copy: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary-executed"
    payload = pickle.dumps({"state_dict": _Canary(canary)}, protocol=4)
    live = tmp_path / "live-canary"
    pickle.loads(pickle.dumps(_Canary(live)))  # the payload really runs when unpickled
    assert live.exists()

    decoys = {
        "checkpoints/disguised.safetensors": payload,
        "checkpoints/SHOUTING.SAFETENSORS": payload,
        "checkpoints/v1-5-pruned-emaonly.ckpt": payload,
        "lora/renamed.weights": pickle.dumps(_Canary(canary), protocol=2),
    }
    for rel, data in decoys.items():
        (models_copy / rel).write_bytes(data)
    _write_torch_style_zip(models_copy / "motion" / "zipped.safetensors", payload)
    _write_torch_style_zip(models_copy / "motion" / "mm.pth", payload)
    # a diffusers folder whose weights file is a pickle wearing the safetensors name
    bad_folder = models_copy / "controlnet" / "bad-folder"
    shutil.copytree(models_copy / "controlnet" / "tiny-controlnet-depth", bad_folder)
    (bad_folder / "diffusion_pytorch_model.safetensors").write_bytes(payload)
    # ... and one that only has pickle weights (.bin)
    bin_folder = models_copy / "motion" / "bin-only"
    shutil.copytree(models_copy / "motion" / "tiny-motion-adapter", bin_folder)
    (bin_folder / "diffusion_pytorch_model.safetensors").unlink()
    (bin_folder / "diffusion_pytorch_model.bin").write_bytes(payload)
    (models_copy / "lora" / "download.zip").write_bytes(b"PK\x03\x04 an archive")

    reg = ModelRegistry(models_copy).scan()
    refused = {r.path.relative_to(models_copy).as_posix(): r.reason for r in reg.refused}
    assert "lora/download.zip" not in refused
    decoys |= {"motion/zipped.safetensors": b"", "motion/mm.pth": b"", "motion/bin-only": b""}
    for rel in [*decoys, "controlnet/bad-folder"]:
        assert rel in refused, rel
        assert "pickle" in refused[rel] or "zip" in refused[rel], refused[rel]
    assert "disguised as .safetensors" in refused["checkpoints/SHOUTING.SAFETENSORS"]
    assert _kinds(reg) == TINY_EXPECTED  # the real models are unaffected
    json.dumps(reg.to_json())

    from backend.models.entries import ModelEntry
    from backend.models.load_checks import ModelLoadError
    from backend.models.loaders import load_checkpoint
    from backend.models.lora import apply_lora

    for rel in ("checkpoints/disguised.safetensors", "checkpoints/SHOUTING.SAFETENSORS"):
        forged = ModelEntry(
            name=rel,
            kind=ModelKind.CHECKPOINT,
            path=models_copy / rel,
            layout="single_file",
            controlnet_type=None,
            size_bytes=1,
            config="tiny-sd15",
        )
        with pytest.raises(ModelLoadError, match="pickle"):
            load_checkpoint(forged, registry=reg)
    pipe = load_checkpoint(reg.get("tiny-sd15"), registry=reg)
    with pytest.raises(ModelLoadError, match="pickle"):
        apply_lora(
            pipe, _entry_like(reg.get("tiny-lora"), models_copy / "motion/zipped.safetensors")
        )
    assert not canary.exists()


def _entry_like(entry, path: Path):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(entry, path=path)


def test_symlinks_leaving_the_models_folder_are_refused(models_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(models_copy / "lora" / "tiny-lora.safetensors", outside / "elsewhere.safetensors")
    shutil.copytree(models_copy / "motion" / "tiny-motion-adapter", outside / "adapter")
    (models_copy / "lora" / "escape.safetensors").symlink_to(outside / "elsewhere.safetensors")
    (models_copy / "motion" / "escape-dir").symlink_to(outside / "adapter")
    (models_copy / "lora" / "inside.safetensors").symlink_to(
        models_copy / "lora" / "tiny-lora.safetensors"
    )
    leaky = models_copy / "controlnet" / "leaky"
    shutil.copytree(models_copy / "controlnet" / "tiny-controlnet-depth", leaky)
    weights = leaky / "diffusion_pytorch_model.safetensors"
    shutil.move(weights, outside / "weights.safetensors")
    weights.symlink_to(outside / "weights.safetensors")

    reg = ModelRegistry(models_copy).scan()
    refused = {r.path.relative_to(models_copy).as_posix(): r.reason for r in reg.refused}
    assert "outside" in refused["lora/escape.safetensors"]
    assert "outside" in refused["motion/escape-dir"]
    assert "outside" in refused["controlnet/leaky"]
    inside = reg.get("lora/inside")
    assert inside.kind == ModelKind.LORA and inside.path.is_relative_to(reg.root)
    assert all(e.path.is_relative_to(reg.root) for e in reg.entries)


def test_invalid_safetensors_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    huge = struct.pack("<Q", 200 * 1024 * 1024) + b"{" + b" " * 64
    (root / "huge-header.safetensors").write_bytes(huge)
    (root / "not-json.safetensors").write_bytes(struct.pack("<Q", 4) + b"abcd")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    (root / "truncated.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"0" * 10
    )
    (root / "unknown.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"0" * 64)
    (root / "readme.txt").write_text("not a model")
    reg = ModelRegistry(root).scan()
    reasons = {r.path.name: r.reason for r in reg.refused}
    assert set(reasons) == {
        "huge-header.safetensors",
        "not-json.safetensors",
        "truncated.safetensors",
        "unknown.safetensors",
    }
    assert "not a valid safetensors" in reasons["huge-header.safetensors"]
    assert "truncated" in reasons["truncated.safetensors"]
    assert "does not recognise" in reasons["unknown.safetensors"]
    assert reg.entries == ()


def test_sd2_and_sdxl_single_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    def header_only(path: Path, shapes: dict[str, list[int]]) -> None:
        offset, header = 0, {}
        for key, shape in shapes.items():
            n = 2 * _prod(shape)
            header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)

    root = tmp_path / "models"
    root.mkdir()
    header_only(
        root / "sdxl.safetensors",
        {
            "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
            "conditioner.embedders.0.x": [1],
        },
    )
    sd2 = {
        "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
        "first_stage_model.encoder.conv_in.weight": [1],
        "cond_stage_model.model.token_embedding.weight": [1],
    }
    header_only(root / "sd2.safetensors", sd2)
    reasons = {r.path.name: r.reason for r in ModelRegistry(root).scan().refused}
    assert "SDXL" in reasons["sdxl.safetensors"]
    assert "2.x" in reasons["sd2.safetensors"]

    header_only(
        root / "ip.safetensors", {"image_proj.proj.weight": [4], "ip_adapter.1.to_k_ip.weight": [4]}
    )
    assert ModelRegistry(root).scan().get("ip").kind == ModelKind.IP_ADAPTER


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


# ---- registry: queries ----------------------------------------------------------------------


def test_missing_models_are_named_with_their_folder(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    empty = ModelRegistry(tmp_path / "models").scan()
    root = str(empty.root)
    video = empty.missing_for("stylize")
    assert len(video) == 2
    assert video[0].startswith("No checkpoint installed") and f"{root}/checkpoints/" in video[0]
    assert video[1] == (
        "No motion adapter installed: put an AnimateDiff motion module (e.g. "
        f"mm_sd_v15_v2.safetensors or a diffusers MotionAdapter folder) in {root}/motion/."
    )
    assert len(empty.missing_for("stylize", mode="per_frame")) == 1
    assert empty.missing_for("inbetween", mode="flow") == []
    diffusion = empty.missing_for("inbetween", mode="diffusion")
    assert any(f"{root}/sparsectrl/" in line for line in diffusion) and len(diffusion) == 3
    canny = empty.missing_for("stylize", [Need(ModelKind.CONTROLNET, controlnet_type="canny")])
    assert "No canny ControlNet installed" in canny[-1] and f"{root}/controlnet/" in canny[-1]

    assert registry.missing_for("stylize") == []
    assert registry.missing_for("inbetween") == []
    assert (
        registry.missing_for("stylize", [Need(ModelKind.CONTROLNET, controlnet_type="depth")]) == []
    )
    named = registry.missing_for("stylize", [Need(ModelKind.CHECKPOINT, name="dreamshaper_8")])
    assert "'dreamshaper_8' is not installed" in named[0] and "checkpoints/" in named[0]
    wrong = registry.missing_for("stylize", [Need(ModelKind.CHECKPOINT, name="tiny-lora")])
    assert wrong == ["'tiny-lora' is a LoRA, not a checkpoint"]
    with pytest.raises(ValueError, match="unknown pipeline"):
        registry.missing_for("upscale")


def test_get_by_name_and_helpful_key_error(registry: ModelRegistry) -> None:
    assert registry.get("checkpoints/tiny-sd15").layout == "diffusers"
    assert registry.get("tiny-sd15-ldm.safetensors").layout == "single_file"
    assert registry.get("tiny-controlnet-depth", ModelKind.CONTROLNET).controlnet_type == "depth"
    with pytest.raises(KeyError, match=r"not installed \(installed: .*tiny-mm-sd-v15-v2"):
        registry.get("mm_sd_v15_v2", ModelKind.MOTION_ADAPTER)
    with pytest.raises(KeyError, match="no model called"):
        registry.get("nothing")
    assert [e.name for e in registry.controlnets("normal")] == ["controlnet/tiny-controlnet-normal"]


def test_models_json_for_the_http_route(registry: ModelRegistry) -> None:
    body = json.loads(json.dumps(registry.to_json()))
    assert {e["name"] for e in body["installed"]["checkpoint"]} == {
        "checkpoints/tiny-sd15",
        "checkpoints/tiny-sd15-ldm",
    }
    assert body["installed"]["controlnet"][0]["path"].startswith("controlnet/")
    modes = body["pipelines"]["stylize"]["modes"]
    assert modes["video"] == {
        "needs": ["checkpoint", "motion_adapter"],
        "ready": True,
        "missing": [],
    }
    assert body["pipelines"]["inbetween"]["modes"]["flow"]["ready"] is True
    assert body["pipelines"]["stylize"]["controlnets"]["lineart"] == [
        "controlnet/tiny-controlnet-lineart"
    ]
    assert body["layout"]["motion_adapter"] == "motion/"
    assert body["refused"] == []


def test_models_json_of_an_empty_folder(tmp_path: Path) -> None:
    body = ModelRegistry(tmp_path / "nothing-here").to_json()
    assert body["pipelines"]["stylize"]["modes"]["video"]["ready"] is False
    assert body["pipelines"]["inbetween"]["modes"]["flow"]["ready"] is True
    assert body["pipelines"]["inbetween"]["ready"] is False  # top level: the diffusion mode
    assert len(body["pipelines"]["inbetween"]["missing"]) == 3
    assert all(v == [] for v in body["installed"].values())


# ---- loading --------------------------------------------------------------------------------


def test_every_kind_loads_offline(registry: ModelRegistry) -> None:
    from diffusers import ControlNetModel, MotionAdapter, SparseControlNetModel

    from backend.models import loaders as loading

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for name, (kind, _, _) in TINY_EXPECTED.items():
        entry = registry.get(name)
        if kind == ModelKind.CHECKPOINT:
            pipe = loading.load_checkpoint(entry, registry=registry)
            assert not pipe.unet.training and not pipe.text_encoder.training
            assert pipe.vae_scale_factor == 8
        elif kind == ModelKind.CONTROLNET:
            assert isinstance(loading.load_controlnet(entry, registry=registry), ControlNetModel)
        elif kind == ModelKind.MOTION_ADAPTER:
            model = loading.load_motion_adapter(entry, registry=registry)
            assert isinstance(model, MotionAdapter) and not model.training
        elif kind == ModelKind.SPARSECTRL:
            model = loading.load_sparsectrl(entry, registry=registry)
            assert isinstance(model, SparseControlNetModel)
        elif kind == ModelKind.IMAGE_ENCODER:
            encoder = loading.load_image_encoder(entry, registry=registry)
            assert not encoder.model.training and encoder.processor.crop_size["height"] == 32
    with pytest.raises(loading.ModelLoadError, match="not a motion adapter"):
        loading.load_motion_adapter(registry.get("tiny-lora"), registry=registry)


def test_single_file_checkpoint_equals_its_folder_twin(registry: ModelRegistry) -> None:
    import torch

    from backend.models.loaders import load_checkpoint

    folder = load_checkpoint(registry.get("checkpoints/tiny-sd15"), registry=registry)
    single = load_checkpoint(registry.get("checkpoints/tiny-sd15-ldm"), registry=registry)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    ids = folder.tokenizer(
        ["a red cube", "ink"], padding="max_length", return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        text_a = folder.text_encoder(ids)[0]
        text_b = single.text_encoder(ids)[0]
        out_a = folder.unet(latents, 10, encoder_hidden_states=text_a).sample
        out_b = single.unet(latents, 10, encoder_hidden_states=text_b).sample
        dec_a = folder.vae.decode(latents).sample
        dec_b = single.vae.decode(latents).sample
    assert torch.equal(text_a, text_b)
    assert torch.equal(out_a, out_b)
    assert torch.equal(dec_a, dec_b)
    assert out_a.abs().sum() > 0 and torch.isfinite(out_a).all() and torch.isfinite(dec_a).all()


def test_single_file_controlnets_and_motion_module_load_exactly(registry: ModelRegistry) -> None:
    import torch

    from backend.models import loaders as loading
    from backend.models import tiny

    def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    for ctype in ("normal", "lineart"):  # original control_model.* layout / diffusers layout
        loaded = loading.load_controlnet(
            registry.get(f"tiny-controlnet-{ctype}"), registry=registry
        )
        assert same(loaded, tiny.build_tiny_controlnet(tiny.SEEDS[ctype]))
    folder = loading.load_motion_adapter(
        registry.get("motion/tiny-motion-adapter"), registry=registry
    )
    single = loading.load_motion_adapter(
        registry.get("motion/tiny-mm-sd-v15-v2"), registry=registry
    )
    assert same(folder, single)


def test_uppercase_extension_loads_through_safetensors(models_copy: Path) -> None:
    import torch

    from backend.models.loaders import load_checkpoint

    src = models_copy / "checkpoints" / "tiny-sd15-ldm.safetensors"
    shutil.move(src, models_copy / "checkpoints" / "LOUD.SAFETENSORS")
    reg = ModelRegistry(models_copy).scan()
    loud = load_checkpoint(reg.get("checkpoints/LOUD"), registry=reg)
    folder = load_checkpoint(reg.get("checkpoints/tiny-sd15"), registry=reg)
    assert torch.equal(loud.unet.conv_in.weight, folder.unet.conv_in.weight)


def test_lora_changes_the_unet_output(registry: ModelRegistry) -> None:
    import torch

    from backend.models.loaders import load_checkpoint
    from backend.models.lora import apply_lora

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 77, 8, generator=torch.Generator().manual_seed(2))
    ids = torch.arange(10).unsqueeze(0)

    def outputs(weight: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = load_checkpoint(registry.get("checkpoints/tiny-sd15"), registry=registry)
        if weight is not None:
            assert apply_lora(pipe, registry.get("tiny-lora"), weight, registry=registry) > 0
        with torch.no_grad():
            return pipe.unet(latents, 5, context).sample, pipe.text_encoder(ids)[0]

    base_unet, base_text = outputs(None)
    zero_unet, zero_text = outputs(0.0)
    full_unet, full_text = outputs(1.0)
    half_unet, _ = outputs(0.5)
    assert torch.equal(base_unet, zero_unet) and torch.equal(base_text, zero_text)
    assert not torch.allclose(base_unet, full_unet, atol=1e-4)
    assert not torch.allclose(base_text, full_text, atol=1e-4)
    assert (half_unet - base_unet).abs().mean() < (full_unet - base_unet).abs().mean()


def test_lora_in_peft_layout_merges_the_same(registry: ModelRegistry, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from backend.models.loaders import load_checkpoint
    from backend.models.lora import apply_lora

    kohya = load_file(str(registry.get("tiny-lora").path))
    peft: dict[str, torch.Tensor] = {}
    for key, value in kohya.items():
        if not key.startswith("lora_unet_") or key.endswith(".alpha"):
            continue
        module = registry_module_name(key.split(".")[0].removeprefix("lora_unet_"))
        scale = float(kohya[key.split(".")[0] + ".alpha"]) / 2  # alpha / rank, folded into B
        if key.endswith("lora_down.weight"):
            peft[f"unet.{module}.lora_A.weight"] = value
        else:
            peft[f"unet.{module}.lora_B.weight"] = value * scale
    root = tmp_path / "models"
    root.mkdir()
    save_file(peft, str(root / "peft-lora.safetensors"))
    unet_only = {k: v for k, v in kohya.items() if k.startswith("lora_unet_")}
    save_file(unet_only, str(root / "kohya-unet.safetensors"))
    reg = ModelRegistry(root).scan()
    a = load_checkpoint(registry.get("checkpoints/tiny-sd15"), registry=registry)
    b = load_checkpoint(registry.get("checkpoints/tiny-sd15"), registry=registry)
    apply_lora(a, reg.get("peft-lora"), 1.0, registry=reg)
    apply_lora(b, reg.get("kohya-unet"), 1.0, registry=reg)
    for (name, pa), pb in zip(a.unet.named_parameters(), b.unet.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def registry_module_name(kohya: str) -> str:
    """lora_unet_ names flatten dots to underscores; undo it for the tiny UNet's module names."""
    name = kohya
    for keep in (
        "down_blocks",
        "up_blocks",
        "mid_block",
        "transformer_blocks",
        "to_out",
        "to_q",
        "to_k",
        "to_v",
    ):
        name = name.replace(keep, keep.replace("_", "\0"))
    return name.replace("_", ".").replace("\0", "_")


def test_single_file_without_tokenizer_says_where_to_put_one(
    registry: ModelRegistry, models_copy: Path, tmp_path: Path
) -> None:
    from backend.models.load_checks import ModelLoadError
    from backend.models.loaders import find_tokenizer
    from backend.models.skeletons import skeleton_dir

    sd15 = skeleton_dir("sd15")
    with pytest.raises(ModelLoadError, match=re.escape(f"{registry.root}/tokenizer/")):
        find_tokenizer(sd15, registry)  # the tiny folder's tokenizer is not SD1.5's
    shutil.copytree(skeleton_dir("tiny-sd15") / "tokenizer", models_copy / "tokenizer")
    reg = ModelRegistry(models_copy).scan()
    assert reg.get("tokenizer").kind == ModelKind.TOKENIZER
    assert find_tokenizer(sd15, reg) == (models_copy / "tokenizer").resolve()
    with pytest.raises(ModelLoadError, match="unknown config skeleton"):
        skeleton_dir("../models")


def test_a_single_file_of_unknown_architecture_asks_for_a_config(models_copy: Path) -> None:
    import dataclasses

    from backend.models.load_checks import ModelLoadError
    from backend.models.loaders import load_checkpoint

    reg = ModelRegistry(models_copy).scan()
    unknown = dataclasses.replace(reg.get("tiny-sd15-ldm"), config=None)
    with pytest.raises(ModelLoadError, match=r'\{"config": "<one of sd15, tiny-sd15>"\}'):
        load_checkpoint(unknown, registry=reg)


def test_a_missing_path_fails_fast_without_the_hub(registry: ModelRegistry, tmp_path: Path) -> None:
    from backend.models.load_checks import ModelLoadError
    from backend.models.loaders import load_controlnet

    gone = _entry_like(registry.get("tiny-controlnet-depth"), tmp_path / "deleted-model")
    with pytest.raises(ModelLoadError, match="no longer at"):
        load_controlnet(gone, registry=registry)


# ---- cache ----------------------------------------------------------------------------------


def test_cache_keeps_a_model_set_loaded(registry: ModelRegistry) -> None:
    from backend.models.cache import LoraSpec, ModelCache, ModelSet

    cache = ModelCache(registry)
    video = ModelSet(
        checkpoint="tiny-sd15",
        motion_adapter="tiny-motion-adapter",
        controlnets=("tiny-controlnet-depth", "tiny-controlnet-normal"),
    )
    first = cache.load(video)
    assert cache.load(video) is first
    assert cache.load(ModelSet(**{**video.__dict__, "dtype": "fp32"})) is first
    assert len(first.controlnets) == 2 and first.motion_adapter is not None

    lineart = ModelSet(checkpoint="tiny-sd15", controlnets=("tiny-controlnet-lineart",))
    other = cache.load(lineart)
    assert other is not first and other.pipe is first.pipe  # the checkpoint is reused
    styled = cache.load(ModelSet(checkpoint="tiny-sd15", loras=(LoraSpec("tiny-lora", 0.8),)))
    assert styled.pipe is not first.pipe  # a merged LoRA never leaks into other sets
    assert len(cache) == 1

    cache.clear()
    assert len(cache) == 0 and video not in cache
    assert cache.load(video) is not first


def test_cache_explains_unknown_names(registry: ModelRegistry) -> None:
    from backend.models.cache import ModelCache, ModelSet
    from backend.models.load_checks import ModelLoadError

    with pytest.raises(ModelLoadError, match="Motion adapter 'mm_sd_v15_v2' is not installed"):
        ModelCache(registry).load(ModelSet(checkpoint="tiny-sd15", motion_adapter="mm_sd_v15_v2"))


def test_the_tiny_set_runs_the_animatediff_pipelines(registry: ModelRegistry) -> None:
    import numpy as np
    import torch
    from diffusers import AnimateDiffControlNetPipeline, AnimateDiffSparseControlNetPipeline

    from backend.models.cache import ModelCache, ModelSet

    loaded = ModelCache(registry).load(
        ModelSet(
            checkpoint="tiny-sd15-ldm",
            motion_adapter="tiny-mm-sd-v15-v2",
            controlnets=("tiny-controlnet-depth", "tiny-controlnet-lineart"),
            sparsectrl="tiny-sparsectrl-rgb",
        )
    )
    frames = [
        [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    ] * 2
    common = {"prompt": "a cube", "height": 64, "width": 64, "num_inference_steps": 2}
    common |= {"output_type": "np", "generator": torch.Generator().manual_seed(0)}
    video = AnimateDiffControlNetPipeline.from_pipe(
        loaded.pipe, motion_adapter=loaded.motion_adapter, controlnet=list(loaded.controlnets)
    )
    video.set_progress_bar_config(disable=True)
    out = video(num_frames=8, conditioning_frames=frames, **common).frames
    assert out.shape == (1, 8, 64, 64, 3) and np.isfinite(out).all() and out.std() > 0.01
    sparse = AnimateDiffSparseControlNetPipeline.from_pipe(
        loaded.pipe, motion_adapter=loaded.motion_adapter, controlnet=loaded.sparsectrl
    )
    sparse.set_progress_bar_config(disable=True)
    from PIL import Image

    keys = [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).astype("uint8")) for f in frames[0]]
    out = sparse(
        num_frames=8,
        conditioning_frames=[keys[0], keys[7]],
        controlnet_frame_indices=[0, 7],
        **common,
    )
    assert out.frames.shape == (1, 8, 64, 64, 3)


# ---- shipped configs ------------------------------------------------------------------------


def test_sd15_skeletons_have_the_published_architectures() -> None:
    """Built on the meta device (no memory): parameter counts of the published models, and the
    diffusers → original key mapping reproduces names found in the published single files."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.models import ldm_layout
    from backend.models.classify import classify_header as _classify_header
    from backend.models.safetensors_header import SafetensorsHeader, TensorInfo
    from backend.models.skeletons import skeleton_dir

    sd, cn, mm = (
        skeleton_dir("sd15"),
        skeleton_dir("sd15-controlnet"),
        skeleton_dir("sd15-motion-adapter-v2"),
    )
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(sd / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(sd / "text_encoder"))
        control = ControlNetModel.from_config(ControlNetModel.load_config(cn))
        motion = MotionAdapter.from_config(MotionAdapter.load_config(mm))

    def count(model: object) -> int:
        return sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]

    assert count(unet) == 859_520_964
    assert count(vae) == 83_653_863
    assert count(text) == 123_060_480

    def shapes(state: dict) -> dict[str, tuple[int, ...]]:  # type: ignore[type-arg]
        return {k: tuple(v.shape) for k, v in state.items()}

    ldm = shapes(
        ldm_layout.unet_to_ldm(unet.state_dict(), unet.config)
        | ldm_layout.vae_to_ldm(vae.state_dict(), vae.config)
        | ldm_layout.clip_to_ldm(text.state_dict())
    )
    assert ldm["model.diffusion_model.input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert ldm["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert ldm["model.diffusion_model.output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert ldm["model.diffusion_model.output_blocks.8.2.conv.weight"] == (640, 640, 3, 3)
    assert ldm["model.diffusion_model.middle_block.1.proj_in.weight"] == (1280, 1280, 1, 1)
    assert ldm["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (
        320,
        768,
    )
    assert ldm["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert ldm["first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert ldm["first_stage_model.decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ldm
    assert len([k for k in ldm if k.startswith("model.diffusion_model.")]) == 686

    ctrl = shapes(ldm_layout.controlnet_to_ldm(control.state_dict(), control.config))
    assert ctrl["control_model.input_hint_block.14.weight"] == (320, 256, 3, 3)
    assert ctrl["control_model.zero_convs.11.0.weight"] == (1280, 1280, 1, 1)
    assert ctrl["control_model.middle_block_out.0.weight"] == (1280, 1280, 1, 1)
    mm_keys = shapes(ldm_layout.motion_adapter_to_original(motion.state_dict()))
    pe = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    assert mm_keys[pe] == (1, 32, 320)

    def classify(keys: dict[str, tuple[int, ...]]) -> tuple[ModelKind, str | None]:
        info = {k: TensorInfo("F16", s) for k, s in keys.items()}
        return _classify_header(SafetensorsHeader(tensors=info))

    assert classify(ldm) == (ModelKind.CHECKPOINT, "sd15")
    assert classify(ctrl) == (ModelKind.CONTROLNET, "sd15-controlnet")
    assert classify(mm_keys) == (ModelKind.MOTION_ADAPTER, "sd15-motion-adapter-v2")


# ---- safety lint ----------------------------------------------------------------------------


def test_no_torch_load_without_weights_only() -> None:
    offenders = []
    for path in (REPO / "backend").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
