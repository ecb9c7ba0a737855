"""The catalogue as data (built-in entries, a --catalogue file, refused paths), how a download's
files are checked and installed, and extra model folders in the registry. No backend process:
the HTTP side is tests/backend/test_downloads.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.downloads_hub import DownloadFailed, expected_digest, file_digest
from backend.downloads_install import Layout, StagedFile, install, is_installed
from backend.models.catalogue import (
    BUILTIN_CATALOGUE,
    CatalogueError,
    ModelKind,
    load_catalogue,
    parse_catalogue,
    parse_entry,
)
from backend.models.registry import ModelRegistry
from tests.backend.hub import git_blob_id


def entry(**more) -> dict:
    return {"name": "x", "kind": "lora", "repo": "a/b", "licence": "mit",
            "files": [{"path": "x.safetensors"}], **more}  # fmt: skip


def test_builtin_entries_read_back_from_their_own_json() -> None:
    names = [e.name for e in BUILTIN_CATALOGUE]
    assert names == ["sd15", "controlnet-depth", "controlnet-normal", "controlnet-lineart",
                     "animatediff-v1-5-3", "sparsectrl-rgb", "ip-adapter-sd15",
                     "wan2.1-vace-1.3b"]  # fmt: skip
    for e in BUILTIN_CATALOGUE:
        assert parse_entry(e.to_json() | {"folder": e.destination}).to_json() == e.to_json()
        assert e.licence
        if e.kind is not ModelKind.WAN_VACE:  # Wan's sharded parts are listed by pattern
            assert all(f.path and f.size for f in e.files)
    (wan,) = [e for e in BUILTIN_CATALOGUE if e.kind is ModelKind.WAN_VACE]
    assert (wan.repo, wan.licence, wan.destination) == (
        "Wan-AI/Wan2.1-VACE-1.3B-diffusers",
        "apache-2.0",
        "wan/wan2.1-vace-1.3b",
    )
    parts = {(f.path or f.pattern or "").split("/")[0] for f in wan.files}
    assert {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"} <= parts
    nets = {e.conditioning for e in BUILTIN_CATALOGUE if e.kind is ModelKind.CONTROLNET}
    assert nets == {"depth", "normal", "lineart"}


def test_a_catalogue_file_adds_and_overrides_by_name(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps([
        entry(name="sd15", kind="checkpoint", repo="studio/sd15-house"),
        entry(name="mm", kind="motion", files=[{"pattern": "*.safetensors"}]),
    ]))  # fmt: skip
    catalogue = load_catalogue(path)
    assert catalogue["sd15"].repo == "studio/sd15-house"  # replaced
    assert catalogue["mm"].kind is ModelKind.MOTION_ADAPTER  # the "motion"
    assert catalogue["mm"].destination == "motion/mm" and catalogue["mm"].total_size is None
    assert catalogue["controlnet-depth"] == BUILTIN_CATALOGUE[1]  # the rest stay


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"files": [{"path": "../x.safetensors"}]}, "contains '..'"),
        ({"files": [{"pattern": "../*.safetensors"}]}, "contains '..'"),
        ({"folder": "lora/../.."}, "contains '..'"),
        ({"folder": "/abs"}, "is an absolute path"),
        ({"folder": "C:/models"}, "is an absolute path"),
        ({"folder": "~/models"}, "is an absolute path"),
        ({"files": [{"path": "a\\..\\x.safetensors"}]}, "backslash"),
        ({"files": [{"path": ".hidden/x.safetensors"}]}, "hidden part"),
        ({"files": [{"path": "model.ckpt"}]}, "downloads no pickles or code"),
        ({"files": [{"path": "loader.py"}]}, "downloads no pickles or code"),
        ({"files": [{"path": "x.safetensors", "sha256": "abc"}]}, "64 hexadecimal digits"),
        ({"files": []}, "non-empty list"),
        ({"kind": "vae"}, "kind 'vae' is not one of"),
        ({"repo": "../etc"}, "repo must be 'owner/name'"),
        ({"pass": "smell"}, "not a known conditioning type"),
        ({"name": ".."}, "name must be"),
        ({"homepage": "x"}, "unknown keys ['homepage']"),
    ],
)
def test_bad_entries_are_refused_with_a_sentence(bad: dict, said: str) -> None:
    with pytest.raises(CatalogueError) as exc:
        parse_entry(entry(**bad))
    assert said in str(exc.value)


def test_a_catalogue_file_that_cannot_be_used_says_why(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(CatalogueError, match="is not valid JSON"):
        load_catalogue(path)
    with pytest.raises(CatalogueError, match="cannot read the catalogue"):
        load_catalogue(tmp_path / "missing.json")
    with pytest.raises(CatalogueError, match="names x more than once"):
        parse_catalogue([entry(), entry()])
    with pytest.raises(CatalogueError, match="must be a JSON list"):
        parse_catalogue({"name": "x"})


def test_digests_follow_the_hub_etag_kinds(tmp_path: Path) -> None:
    data = b'{"a": 1}\n'
    f = tmp_path / "config.json"
    f.write_bytes(data)
    assert file_digest(f, "git-sha1") == git_blob_id(data)  # what the hub's ETag holds
    sha = file_digest(f, "sha256")
    assert expected_digest(None, sha) == ("sha256", sha, "the hub's LFS ETag")
    assert expected_digest("A" * 64, sha) == ("sha256", "a" * 64, "the catalogue")
    assert expected_digest(None, git_blob_id(data))[0] == "git-sha1"
    with pytest.raises(DownloadFailed, match="add its sha256 to the catalogue"):
        expected_digest(None, "W/abc-123")


def stage(layout: Layout, name: str, files: dict[str, bytes]) -> list[StagedFile]:
    verified = layout.staging(name) / "verified"
    verified.mkdir(parents=True)
    staged = []
    for path, data in files.items():
        digest = git_blob_id(data)
        (verified / digest).write_bytes(data)
        staged.append(StagedFile(path, digest))
    return staged


def test_install_moves_verified_files_and_declares_the_controlnet_type(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "models", tmp_path / "data")
    net = parse_entry(entry(name="net", kind="controlnet", **{"pass": "normal"},
                            files=[{"path": "config.json"}, {"path": "w.safetensors"}]))  # fmt: skip
    assert not is_installed(layout, net)
    same = b"{}"  # two paths, the same bytes: both land
    staged = stage(layout, "net", {"config.json": same, "w.safetensors": b"w"})
    staged.append(StagedFile("extra.json", staged[0].digest))
    assert install(layout, net, staged) == [
        "controlnet/net/config.json", "controlnet/net/extra.json",
        "controlnet/net/framesmith.json", "controlnet/net/w.safetensors",
    ]  # fmt: skip
    folder = tmp_path / "models" / "controlnet" / "net"
    assert json.loads((folder / "framesmith.json").read_text()) == {"controlnet_type": "normal"}
    assert (folder / "extra.json").read_bytes() == same
    assert is_installed(layout, net)
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "models").iterdir())
    (folder / "w.safetensors").unlink()
    assert not is_installed(layout, net)  # the record lists a file that is gone


def test_install_over_an_existing_folder_replaces_file_by_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "models", tmp_path / "data")
    lora = parse_entry(entry(name="l", files=[{"pattern": "*.safetensors"}]))
    folder = tmp_path / "models" / "lora" / "l"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("the user's note")
    (folder / "a.safetensors").write_bytes(b"old")
    assert not is_installed(layout, lora)  # a pattern entry: only its record can say
    install(layout, lora, stage(layout, "l", {"a.safetensors": b"new"}))
    assert (folder / "a.safetensors").read_bytes() == b"new"
    assert (folder / "mine.txt").read_text() == "the user's note"
    assert is_installed(layout, lora)
    changed = parse_entry(entry(name="l", repo="a/other", files=[{"pattern": "*"}]))
    assert not is_installed(layout, changed)  # the record was for another entry


def test_extra_folders_add_models_under_unique_names(tiny_models: Path, tmp_path: Path) -> None:
    main = tmp_path / "models"
    shutil.copytree(tiny_models / "lora", main / "lora")
    comfy = tmp_path / "ComfyUI" / "models"
    shutil.copytree(tiny_models, comfy)
    registry = ModelRegistry(main, extra=[comfy, main]).scan()  # the main folder once only
    assert registry.roots == (main.resolve(), comfy.resolve())
    loras = sorted(e.name for e in registry.of_kind(ModelKind.LORA))
    assert loras == ["lora/tiny-lora", "models/lora/tiny-lora"]  # the second one is renamed
    assert registry.get("checkpoints/tiny-sd15").path == (comfy / "checkpoints/tiny-sd15").resolve()
    assert registry.contains((comfy / "lora").resolve())
    assert not registry.contains(tmp_path.resolve())
    assert registry.missing_for("stylize") == []
    assert registry.to_json()["extra"] == [str(comfy.resolve())]
