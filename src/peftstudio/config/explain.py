"""What `explain` says about a key, a section or a group — read from the schema and the
shipped group files, so it can never drift from what validation enforces."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from peftstudio.config.compose import ALL_GROUPS, CONF_DIR, group_options, is_global_package, read_yaml
from peftstudio.config.introspect import ABSENT, FieldDoc, all_leaf_keys, find_field, keys_under, lookup
from peftstudio.config.schema import canonical_key
from peftstudio.errors import Problem, UserError


@dataclass
class GroupOption:
    name: str
    summary: str
    sets: dict[str, Any]


@dataclass
class Explanation:
    key: str
    doc: FieldDoc | None = None
    children: list[FieldDoc] = field(default_factory=list)
    options: list[GroupOption] = field(default_factory=list)
    set_by: dict[str, Any] = field(default_factory=dict)  # "group=option" -> value, for a leaf key


def explain(key: str) -> Explanation:
    """Explain a dotted key (`training.micro_batch_size`), a section (`training`), a group
    (`platform`) or one group option (`peft=dora`)."""
    key = canonical_key(key.strip()) or key.strip()  # an alias (model.lora_rank) explains its key (peft.r)
    group, _, option = key.replace("/", "=").partition("=")
    if option:
        if group not in ALL_GROUPS or option not in group_options(group):
            raise _unknown(key)
        return Explanation(key, options=[_option(group, option)])
    doc = find_field(key)
    if doc is None and key not in ALL_GROUPS:
        raise _unknown(key)
    explanation = Explanation(key, doc=doc)
    if doc is not None and doc.is_section and key != "model.architecture":
        explanation.children = [find_field(child) for child in keys_under(key)]
    if key in ALL_GROUPS:
        explanation.options = [_option(key, name) for name in group_options(key)]
    if doc is not None and not doc.is_section:
        explanation.set_by = _set_by(key)
    return explanation


def _option(group: str, option: str) -> GroupOption:
    path = CONF_DIR / group / f"{option}.yaml"
    comments = [line[1:].strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.startswith("#") and "@package" not in line]
    data, _ = read_yaml(path)
    data = dict(data or {})
    data.pop("defaults", None)
    return GroupOption(option, " ".join(comments), data)


def _set_by(key: str) -> dict[str, Any]:
    """Which shipped group options set this key, and to what."""
    found = {}
    for group in ALL_GROUPS:
        for option in group_options(group):
            values = _option(group, option).sets
            scoped = values if is_global_package(CONF_DIR / group / f"{option}.yaml") else {group: values}
            value = lookup(scoped, key)
            if value is not ABSENT:
                found[f"{group}={option}"] = value
    return found


def _unknown(key: str) -> UserError:
    candidates = all_leaf_keys() + list(ALL_GROUPS) + [k for k in keys_under() if k not in ALL_GROUPS]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UserError(Problem(key, f"no such key or group{hint}",
                             f"try one of: {', '.join(ALL_GROUPS)}, or a dotted key such as training.micro_batch_size"))


def default_text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value
