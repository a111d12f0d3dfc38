"""Validation rows as (prompt, target) pairs for generation-based evaluation.

A prepared row (TRL shape) becomes the conversation up to its last assistant turn (what the
model is asked) and that turn's text (what it should answer). Text rows have no answer to
compare with, and are left out; `plan` refuses eval.metrics when no row has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalExample:
    messages: list[dict[str, Any]]  # the conversation the model answers (ends with a user turn)
    target: str  # the reference answer: the last assistant turn's text
    columns: dict[str, Any] = field(default_factory=dict)  # the row's other columns, for python: metrics

    @property
    def prompt(self) -> str:
        """The last user turn's text, as the predictions table shows it."""
        return str(self.messages[-1].get("content", "")) if self.messages else ""


def eval_example(row: dict[str, Any]) -> EvalExample | None:
    """The (prompt, target) of one prepared row; None when it has no answer to compare with."""
    if "prompt" in row and "completion" in row:
        completion = row["completion"]
        target = completion[-1]["content"] if isinstance(completion, list) else completion
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        return EvalExample(list(prompt), str(target), _other_columns(row))
    messages = row.get("messages")
    if messages:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last:
            return EvalExample(list(messages[:last]), str(messages[last]["content"]), _other_columns(row))
    return None


def eval_examples(rows: list[dict[str, Any]], count: int | None = None) -> list[EvalExample]:
    """The first `count` rows (all with None) that have an answer, in order."""
    found = []
    for row in rows:
        example = eval_example(row)
        if example is not None:
            found.append(example)
            if count is not None and len(found) >= count:
                break
    return found


def _other_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in ("prompt", "completion", "messages")}
