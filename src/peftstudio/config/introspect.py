"""Read the schema itself: dotted keys, field docs, ranges and defaults.

`explain`, error messages and composition all ask the schema the same questions; they are
answered here once.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from peftstudio.config.schema import RunConfig


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The Section class a field holds (unwrapping `X | None`), or None for a leaf. A list of
    models (grpo.rewards, eval.metrics) is one leaf value: its items have no dotted keys."""
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = typing.get_args(annotation) if is_union else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


@dataclass(frozen=True)
class FieldDoc:
    key: str
    info: FieldInfo

    @property
    def description(self) -> str:
        return " ".join((self.info.description or "").split())

    @property
    def type_text(self) -> str:
        text = str(self.info.annotation).replace("typing.", "")
        return text.replace("<class '", "").replace("'>", "")

    @property
    def default(self) -> Any:
        if self.info.default_factory is not None:
            value = self.info.default_factory()
            return value.model_dump() if isinstance(value, BaseModel) else value
        return None if self.info.default is PydanticUndefined else self.info.default

    @property
    def range_text(self) -> str:
        """Allowed values in words: `1–1024`, `one of a, b`, or empty."""
        extra = self.info.json_schema_extra
        if isinstance(extra, dict) and "allowed" in extra:
            return str(extra["allowed"])
        bounds = {}
        for item in self.info.metadata:
            for name in ("ge", "gt", "le", "lt"):
                if getattr(item, name, None) is not None:
                    bounds[name] = getattr(item, name)
        if bounds:
            low = f"≥ {bounds['ge']}" if "ge" in bounds else (f"> {bounds['gt']}" if "gt" in bounds else "")
            high = f"≤ {bounds['le']}" if "le" in bounds else (f"< {bounds['lt']}" if "lt" in bounds else "")
            if "ge" in bounds and "le" in bounds:
                return f"{bounds['ge']}–{bounds['le']}"
            return " and ".join(part for part in (low, high) if part)
        choices = literal_choices(self.info.annotation)
        return f"one of {', '.join(map(str, choices))}" if choices else ""

    @property
    def memory_note(self) -> str:
        extra = self.info.json_schema_extra
        return extra.get("memory", "") if isinstance(extra, dict) else ""

    @property
    def is_section(self) -> bool:
        return _section_class(self.info.annotation) is not None


def literal_choices(annotation: Any) -> list[Any]:
    """The values of a Literal annotation (also inside `X | Literal[...]`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    choices: list[Any] = []
    for arg in typing.get_args(annotation):
        choices += literal_choices(arg)
    return choices


def section_fields(model: type[BaseModel] = RunConfig) -> dict[str, FieldInfo]:
    return dict(model.model_fields)


def find_field(key: str) -> FieldDoc | None:
    """The field at a dotted key such as `training.micro_batch_size`, or None."""
    model: type[BaseModel] | None = RunConfig
    info = None
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _section_class(info.annotation)
    return FieldDoc(key, info) if info is not None else None


def keys_under(prefix: str = "") -> list[str]:
    """Every dotted key one level under `prefix` (top level when empty)."""
    model = RunConfig if not prefix else _section_class(find_field(prefix).info.annotation)
    if model is None:
        return []
    return [f"{prefix}.{name}" if prefix else name for name in model.model_fields]


def all_leaf_keys() -> list[str]:
    """Every settable leaf key, dotted, in schema order."""
    leaves: list[str] = []
    pending = keys_under()
    while pending:
        key = pending.pop(0)
        field = find_field(key)
        if field.is_section and key != "model.architecture":
            pending = keys_under(key) + pending
        else:
            leaves.append(key)
    return leaves


def is_section_key(key: str) -> bool:
    field = find_field(key)
    return field is not None and field.is_section


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted leaf keys; mappings that are values (data.columns) stay whole."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and value and not _is_mapping_value(dotted):
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _is_mapping_value(dotted: str) -> bool:
    field = find_field(dotted)
    return field is not None and not field.is_section


ABSENT = object()


def lookup(values: Any, dotted: str) -> Any:
    """The value at a dotted key of a nested mapping, or ABSENT."""
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return ABSENT
        values = values[part]
    return values
