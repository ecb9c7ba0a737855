"""Printing a benchmark's figures: aligned tables for people, one RESULT line per part for tools.

A RESULT line is `RESULT <part> key=value key=value ...` with numbers in plain decimal (or `nan`
when a figure could not be measured), so a test or a script can parse it without the table.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class Table:
    """Rows of strings under a header, printed with each column as wide as its widest cell."""

    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        lines = [_line(self.columns, widths), _line(["-" * w for w in widths], widths)]
        lines += [_line(row, widths) for row in self.rows]
        return "\n".join(lines)

    def print(self) -> None:
        print(self.render(), flush=True)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # First column left-aligned (labels), the rest right-aligned (numbers).
    parts = [cells[0].ljust(widths[0])]
    parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join(parts).rstrip()


def heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def note(text: str) -> None:
    print(f"  {text}", flush=True)


def warn(text: str) -> None:
    print(f"  note: {text}", file=sys.stderr, flush=True)


def number(value: float | None, digits: int = 3) -> str:
    """A figure for a table: fixed decimals, or n/a when it could not be measured."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def result_line(part: str, figures: Mapping[str, float | int | str | None]) -> str:
    fields = [f"RESULT {part}"]
    for key, value in figures.items():
        if not _KEY.match(key):
            raise ValueError(f"bad RESULT key {key!r}")
        fields.append(f"{key}={_value(value)}")
    return " ".join(fields)


def print_result(part: str, figures: Mapping[str, float | int | str | None]) -> None:
    print(result_line(part, figures), flush=True)


def _value(value: float | int | str | None) -> str:
    if value is None:
        return "nan"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "nan"
    text = str(value)
    if not text or any(c.isspace() or c == "=" for c in text):
        raise ValueError(f"a RESULT value must be one word, not {text!r}")
    return text


def parse_results(output: str) -> dict[str, dict[str, str]]:
    """{part: {key: value}} from every RESULT line in a benchmark's output."""
    found: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        if not line.startswith("RESULT "):
            continue
        _, part, *pairs = line.split()
        found[part] = dict(pair.split("=", 1) for pair in pairs)
    return found
