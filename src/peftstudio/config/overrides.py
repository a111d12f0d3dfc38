"""Values written as `key=value` overrides in Hydra's grammar, quoted only where needed."""

from __future__ import annotations

import re
from typing import Any

# Inside quotes the grammar reads a backslash as itself, except in a run of backslashes just
# before a quote (or the closing quote), where each pair stands for one and `\'` for a quote.
_BEFORE_QUOTE = re.compile(r"(\\*)('|\Z)")


def quoted(text: str) -> str:
    """`text` as one quoted override value: always read back as this exact string."""
    return "'" + _BEFORE_QUOTE.sub(lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text) + "'"


def override_value(value: Any) -> str:
    """A Python value in the override grammar: lists bracketed, strings quoted when they hold
    characters the grammar would read otherwise (spaces, commas, brackets, quotes)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return f"[{','.join(override_value(v) for v in value)}]"
    if isinstance(value, dict):  # a list item of grpo.rewards / eval.metrics
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    plain = text.replace("_", "").replace("-", "").replace(".", "").replace("/", "").replace(":", "").isalnum()
    return text if plain else quoted(text)


def override_text(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar."""
    return f"{key}={override_value(value)}"
