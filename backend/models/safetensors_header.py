"""Read a safetensors header without torch, and sniff pickle files without unpickling them.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping tensor names
to {dtype, shape, data_offsets}, then the raw tensor bytes. Reading only the header tells what a
file is (by its tensor names and shapes) at the cost of one small read. read_checked_header
adds the checks a hostile file needs (byte ranges that tile the data, nesting, huge numbers).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024

_DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}

# Extensions that hold pickles (torch.save, .ckpt from the LDM era, transformers' .bin).
PICKLE_EXTENSIONS = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle", ".pck"})


class HeaderError(ValueError):
    """Not a valid safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str] = field(default_factory=dict)

    def shape(self, key: str) -> tuple[int, ...] | None:
        info = self.tensors.get(key)
        return info.shape if info is not None else None


def read_header(path: Path, max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Parse and validate the header of a safetensors file; raise HeaderError otherwise."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > max_header_bytes or 8 + n > size:
            raise HeaderError(f"implausible safetensors header length ({n} bytes)")
        raw = f.read(n)
    if not raw.lstrip(b" ").startswith(b"{"):
        raise HeaderError("safetensors header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeaderError(f"safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("safetensors header is not a JSON object")

    data_bytes = size - 8 - n
    metadata: dict[str, str] = {}
    tensors: dict[str, TensorInfo] = {}
    for key, value in header.items():
        if key == "__metadata__":
            if not isinstance(value, dict):
                raise HeaderError("__metadata__ is not an object")
            metadata = {str(k): str(v) for k, v in value.items()}
            continue
        tensors[key] = _tensor_info(key, value, data_bytes)
    return SafetensorsHeader(tensors=tensors, metadata=metadata)


def _tensor_info(key: str, value: object, data_bytes: int) -> TensorInfo:
    if not isinstance(value, dict):
        raise HeaderError(f"tensor {key!r} has no description")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        raise HeaderError(f"tensor {key!r} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise HeaderError(f"tensor {key!r} has an invalid shape")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_bytes
    ):
        raise HeaderError(f"tensor {key!r} points outside the file (truncated download?)")
    expected = math.ceil(math.prod(shape) * _DTYPE_BYTES[dtype])
    if offsets[1] - offsets[0] != expected:
        raise HeaderError(
            f"tensor {key!r} has {offsets[1] - offsets[0]} bytes, expected {expected}"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape))


def sniff_pickle(path: Path) -> str | None:
    """Name the serialisation if the file's first bytes are a pickle or a torch zip archive."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head[:2] in {b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"}:
        return "a Python pickle"
    if head == b"PK\x03\x04":
        return "a zip archive (torch.save format, which contains a pickle)"
    return None


def is_pickle_name(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_EXTENSIONS


# ---- hostile files --------------------------------------------------------------------------


def read_checked_header(path: Path) -> SafetensorsHeader:
    """read_header, plus what a hostile file can do to it: every failure is a HeaderError whose
    text says what is wrong, and a file the safetensors loader would refuse is refused here."""
    try:
        header = read_header(path)
        _check_tensor_ranges(path)
    except RecursionError:
        raise HeaderError("its header is JSON nested deeper than any model's") from None
    except MemoryError:
        raise HeaderError("its header is too large to read") from None
    except HeaderError:
        raise
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise HeaderError(f"its header holds a value that cannot be read ({exc})") from None
    return header


def _check_tensor_ranges(path: Path) -> None:
    """The tensors' byte ranges must tile the data exactly, as the safetensors loader demands:
    sorted by offset, each starting where the previous ended, the last ending at the file's end.
    Overlaps, gaps and trailing bytes are refused. Reads the (already validated) header again:
    read_header keeps no offsets."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    ranges = sorted(
        (tuple(value["data_offsets"]), key)
        for key, value in header.items()
        if key != "__metadata__"
    )
    end = 0
    for (start, stop), key in ranges:
        if start != end:
            what = "overlaps another tensor" if start < end else "leaves a gap before it"
            raise HeaderError(f"tensor {key!r} {what} (bytes {start} to {stop})")
        end = stop
    if end != size - 8 - n:
        raise HeaderError(f"{size - 8 - n - end} bytes after the last tensor belong to none")
