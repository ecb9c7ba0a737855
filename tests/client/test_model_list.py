"""The backend's last model listing is kept in a file, so the menus have it after a restart;
a missing or broken file gives empty menus, never an exception."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from client.backend import ModelChoices
from client.model_list import FILE_NAME, Listing, ModelList, read, write

FOUND = ModelChoices(
    ("anime", "toon"), ("mm-v3",), ("lines",), ("rgb",), ("ip-plus",), ("vit-h",), working_size=768
)


def test_a_listing_survives_a_restart_with_the_time_of_its_check(tmp_path: Path) -> None:
    before = ModelList(tmp_path)
    assert before.get() == Listing()  # nothing checked yet: empty menus
    before.remember(FOUND, now=1_700_000_000.0)
    assert before.get().choices == FOUND

    after = ModelList(tmp_path)  # a new session: only the file is left
    assert after.get() == Listing(FOUND, 1_700_000_000.0)
    assert after.get().when() != "never"
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # no temp file left

    # the add-on forgets the listing at unregister and finds the file again at register
    after.use_folder(None)
    assert after.get() == Listing()
    after.use_folder(tmp_path)
    assert after.get().choices == FOUND


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe binary",
        b"[]",
        json.dumps({"format": 99, "checked_at": 1, "models": {}}).encode(),
        json.dumps({"format": 1, "checked_at": 1, "models": []}).encode(),
        json.dumps({"format": 1, "checked_at": 1, "models": {"checkpoints": "toon"}}).encode(),
        json.dumps({"format": 1, "checked_at": 1, "models": {"loras": [1, 2]}}).encode(),
    ],
)
def test_a_broken_file_gives_empty_menus(tmp_path: Path, content: bytes) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    assert ModelList(tmp_path).get() == Listing()
    assert read(tmp_path / "missing.json") == Listing()


def test_unknown_kinds_and_a_bad_time_are_left_out(tmp_path: Path) -> None:
    data = {
        "format": 1,
        "checked_at": "yesterday",
        "models": {"checkpoints": ["toon"], "upscalers": ["x4"]},
    }
    (tmp_path / FILE_NAME).write_text(json.dumps(data))
    assert ModelList(tmp_path).get() == Listing(ModelChoices(checkpoints=("toon",)), None)


def test_a_file_that_cannot_be_written_keeps_the_listing_for_this_session(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    models = ModelList(blocked)  # its "folder" is a file: every write fails
    models.remember(FOUND)
    assert models.get().choices == FOUND


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / FILE_NAME
    write(path, Listing(FOUND, 1.0))

    def broken_dump(*_args: object, **_kw: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write(path, Listing(ModelChoices(), 2.0))
    monkeypatch.undo()
    assert read(path) == Listing(FOUND, 1.0)
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]


def test_checks_on_worker_threads_leave_the_last_one(tmp_path: Path) -> None:
    models = ModelList(tmp_path)
    lists = [ModelChoices(checkpoints=(f"ckpt-{i}",)) for i in range(8)]
    threads = [
        threading.Thread(target=models.remember, args=(found, float(i)))
        for i, found in enumerate(lists)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert models.get().choices in lists
    assert ModelList(tmp_path).get() == models.get()  # file and memory agree
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]
