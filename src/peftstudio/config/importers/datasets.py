"""Dataset entries of foreign configs → peftstudio data sources (path, format, columns).

The first dataset becomes `data.path` / `data.format` / `data.columns`; further ones become
`data.datasets`, a list the data layer reads and concatenates. A dataset peftstudio cannot read
as its source tool did is refused with the entry named.
"""

from __future__ import annotations

from typing import Any

from peftstudio.config.importers.table import Pairs, Refused

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}
# Chat template names of other tools → peftstudio's (`data.chat_template`); None: the tokenizer's own.
CHAT_TEMPLATES = {"tokenizer_default": None, "chatml": "chatml", "llama3": "llama3", "llama3_2_vision": "llama3_2",
                  "qwen_25": "qwen2_5", "qwen2_5": "qwen2_5", "qwen3": "qwen3", "gemma": "gemma", "gemma3": "gemma3",
                  "phi_3": "phi3", "phi_35": "phi3_5", "phi3": "phi3", "cohere": "cohere", "deepseek_v3": "deepseekv3",
                  "llama3_1": "llama3_1", "llama3_2": "llama3_2", "gpt_oss": "gptoss", "lfm2": "lfm2"}


def chat_template(value: Any) -> str | None:
    name = str(value)
    if name not in CHAT_TEMPLATES:
        raise Refused(f"chat template {name!r} is not one peftstudio ships; pass the Jinja text as data.chat_template")
    return CHAT_TEMPLATES[name]


def conversation_source(field: str, role: str, content: str, roles: dict[str, list[str]] | None) -> tuple[str, dict]:
    """(format, columns) for conversations in column `field` whose turns hold `role` / `content`."""
    if (role, content) == ("role", "content"):
        data_format, column, allowed = "chat", "messages", {"system": "system", "user": "user", "assistant": "assistant"}
    elif (role, content) == ("from", "value"):
        data_format, column, allowed = "sharegpt", "conversations", SHAREGPT_ROLES
    else:
        raise Refused(f"turns keyed {role!r}/{content!r}: peftstudio reads role/content or from/value")
    for target, names in (roles or {}).items():
        for name in names if isinstance(names, list) else [names]:
            if allowed.get(name, target) != target:
                raise Refused(f"role {name!r} listed as {target}: peftstudio reads it as {allowed.get(name)}")
            if name not in allowed:
                raise Refused(f"role name {name!r} is not one peftstudio reads ({', '.join(allowed)})")
    return data_format, ({column: field} if field != column else {})


def source_pairs(sources: list[dict[str, Any]]) -> Pairs:
    """The first source as data.* keys, the others as the data.datasets list."""
    first, *others = sources
    pairs: Pairs = [(f"data.{key}", value) for key, value in first.items()]
    if others:
        pairs.append(("data.datasets", others))
    return pairs


def clean(entry: dict[str, Any]) -> dict[str, Any]:
    """A source without empty columns / None values."""
    return {key: value for key, value in entry.items() if value not in (None, {})}
