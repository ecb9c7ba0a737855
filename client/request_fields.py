"""The field-driven serializer of the stored requests: a dataclass's fields as JSON values and
back, each value converted by its field's type (nested records through their own to_json() and
from_json()), so a new field needs no code here."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, Self, TypeVar

T = TypeVar("T")


class RequestError(ValueError):
    """Settings that cannot make a job; the message says what to change."""


def fields_to_json(record: Any) -> dict[str, Any]:
    """A dataclass's fields as JSON values: nested records through their own `to_json()`,
    tuples as lists."""
    return {f.name: _to_json_value(getattr(record, f.name)) for f in fields(record)}


def fields_from_json(cls: type[T], data: Any, label: str) -> T:
    """A dataclass from the JSON object `fields_to_json()` wrote, each value converted by its
    field's type; unknown fields are refused, a null reads as the field's default (the backend
    reports its defaults as null). `label` names the object in the errors."""
    if not isinstance(data, Mapping):
        raise RequestError(f"the stored {label} is not a JSON object")
    field_types = _field_types(cls)
    unknown = sorted(set(data) - set(field_types))
    if unknown:
        raise RequestError(f"the stored {label} has unknown fields: {', '.join(unknown)}")
    try:
        values = {k: _from_json_value(field_types[k], v) for k, v in data.items() if v is not None}
    except RequestError:
        raise
    except (TypeError, ValueError) as exc:
        raise RequestError(f"the stored {label} has a malformed value: {exc}") from None
    try:
        return cls(**values)
    except TypeError as exc:
        raise RequestError(f"the stored {label} is incomplete: {exc}") from None


def fields_of(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass, e.g. of one field group (SamplingOptions, ModelChoice)."""
    return tuple(f.name for f in fields(cls))


def _to_json_value(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, tuple):
        return [_to_json_value(v) for v in value]
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _from_json_value(hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None; nulls are gone
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return tuple(_from_json_value(item, v) for v in value)
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        return hint.from_json(value)
    if hint in (int, float):
        return hint(value)
    return value


class JsonFields:
    """A small frozen dataclass stored as the JSON object of its fields."""

    label: ClassVar[str]  # what errors call it: "the stored {label} ..."

    def to_json(self) -> dict[str, Any]:
        return fields_to_json(self)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Stored fields (`to_json()`), or the backend's own where null means its default."""
        return fields_from_json(cls, data, cls.label)
