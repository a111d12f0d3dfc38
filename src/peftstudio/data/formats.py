"""Record formats: detect which one a file uses, check every record, convert to TRL's shape.

Formats (after `data.columns` renaming):
- instruction (alpaca): instruction, optional input, output
- chat: messages = [{role, content}, ...]
- sharegpt: conversations = [{from, value}, ...] (from: human/gpt/system)
- prompt_completion: prompt, completion
- text: text

Each problem names the record's location, the bad value, and the fix.
"""

from __future__ import annotations

import difflib
from typing import Any

from peftstudio.data.sources import MAX_PROBLEMS, Record
from peftstudio.errors import Problem, UserError

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "instruction": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
# What each format trains on; checked non-empty in every record.
ANSWER_COLUMN = {"instruction": "output", "prompt_completion": "completion", "text": "text"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")


FORMAT_COLUMNS = sorted({c for names in REQUIRED_COLUMNS.values() for c in names} | {"input"})


def check_column_mapping(columns: dict[str, str]) -> None:
    """`data.columns` maps a format's column name to the user's: {prompt: question}. A key
    that is no format column is usually the mapping written the wrong way round."""
    problems = []
    for target, source in columns.items():
        if target not in FORMAT_COLUMNS:
            hint = f"{{{source}: {target}}}" if source in FORMAT_COLUMNS else f"{{one of {', '.join(FORMAT_COLUMNS)}: {target}}}"
            problems.append(Problem(f"data.columns.{target}", f"{target!r} is not a column peftstudio reads (the keys are "
                                    "the format's names, the values your columns)", f"write data.columns={hint}"))
    if problems:
        raise UserError(problems)


def rename_columns(record: Record, columns: dict[str, str]) -> Record:
    """Apply `data.columns` ({format_name: your_column}) to one record."""
    if not columns:
        return record
    values = dict(record.values)
    for target, source in columns.items():
        if source in values:
            values[target] = values.pop(source)
    return Record(record.where, values)


# Formats of the other objectives (data/objective_data.py reads them), which SFT cannot train on.
OBJECTIVE_FORMATS = {"preference": "dpo|orpo", "kto": "kto", "prompt": "grpo"}


def detect_format(records: list[Record], requested: str) -> tuple[str, str]:
    """The format to use and why: the requested one, or the first whose columns the first
    record has."""
    if requested in OBJECTIVE_FORMATS:
        raise UserError(Problem("data.format", f"data.format={requested} is the data of objective="
                                f"{OBJECTIVE_FORMATS[requested]}, but this run is objective=sft",
                                f"set objective={OBJECTIVE_FORMATS[requested].split('|')[0]}, or a format SFT trains on: "
                                "auto|chat|sharegpt|instruction|prompt_completion|text"))
    if requested != "auto":
        return requested, "data.format set explicitly"
    first = records[0]
    keys = set(first.values)
    for name, required in REQUIRED_COLUMNS.items():
        if set(required) <= keys:
            return name, f"detected from the first record's columns ({', '.join(sorted(keys))})"
    raise UserError(_undetectable(first))


def _undetectable(first: Record) -> Problem:
    found = sorted(first.values)
    # The likeliest intent: the format missing the fewest columns, then the one whose missing
    # columns look most like columns that were found.
    def distance(name: str) -> tuple[int, float]:
        missing = [c for c in REQUIRED_COLUMNS[name] if c not in first.values]
        return len(missing), -sum(max((difflib.SequenceMatcher(None, c, f).ratio() for f in found), default=0.0)
                                   for c in missing)

    name = min(REQUIRED_COLUMNS, key=distance)
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in first.values]
    matches = {c: _closest(c, found) for c in missing}
    mapping = ", ".join(f"{c}: {m}" for c, m in matches.items() if m)
    hint = f"; closest: {', '.join(f'{m!r} for {c!r}' for c, m in matches.items() if m)}" if mapping else ""
    fix = f"data.columns={{{mapping}}}" if mapping else "data.columns={target: your_column}"
    return Problem(first.where, f"cannot tell the format from columns {found} (nearest format {name}, missing "
                   f"{', '.join(map(repr, missing))}{hint})",
                   f"map your columns with {fix}, or set data.format=chat|sharegpt|instruction|prompt_completion|text")


def _closest(column: str, found: list[str]) -> str | None:
    close = difflib.get_close_matches(column, found, n=1, cutoff=0.5)
    return close[0] if close else None


def check_records(source: str, records: list[Record], data_format: str, columns: dict[str, str]) -> None:
    """Every record must fit `data_format`; all problems (up to MAX_PROBLEMS) reported at once."""
    found: dict[tuple[str, str], list[str]] = {}
    for record in records:
        problem = record_problem(record.values, data_format, columns)
        if problem:
            found.setdefault(problem, []).append(record.where)
    if not found:
        return
    # One problem repeated in every record (a misnamed column) is reported once, with a count.
    problems = [Problem(places[0], message + (f" (and {len(places) - 1} more record(s) like it, e.g. {places[1]})"
                                              if len(places) > 1 else ""), fix)
                for (message, fix), places in found.items()]
    count = sum(len(places) for places in found.values())
    raise UserError(problems[:MAX_PROBLEMS],
                    headline=f"{source}: {count} bad record(s) for format {data_format}" if len(problems) > 1 else None)


def record_problem(values: dict[str, Any], data_format: str, columns: dict[str, str]) -> tuple[str, str] | None:
    """(message, fix) for the first thing wrong with one record, or None."""
    for column in REQUIRED_COLUMNS[data_format]:
        if column not in values:
            return _missing_column(column, values, columns)
    if data_format == "chat":
        return _conversation_problem(values["messages"], "role", "content", CHAT_ROLES)
    if data_format == "sharegpt":
        return _conversation_problem(values["conversations"], "from", "value", tuple(SHAREGPT_ROLES))
    optional = ("input",) if data_format == "instruction" else ()
    for column in REQUIRED_COLUMNS[data_format] + optional:
        value = values.get(column)
        if column in optional and value is None:
            continue
        if not isinstance(value, str):
            return (f"column {column!r} must be text, got {type(value).__name__} {_show(value)}",
                    "store it as a string (quote numbers, join lists)")
    answer = ANSWER_COLUMN[data_format]
    if not values[answer].strip():
        return f"column {answer!r} is empty", "remove the record or fill it in"
    return None


def _missing_column(column: str, values: dict[str, Any], columns: dict[str, str]) -> tuple[str, str]:
    found = sorted(values)
    if column in columns:
        source = columns[column]
        close = _closest(source, found)
        hint = f"; closest: {close!r}" if close else ""
        return (f"data.columns maps {column} to {source!r}, but the record has no column {source!r} "
                f"(found {found}{hint})", f"set data.columns.{column}={close or 'one of the columns found'}")
    close = _closest(column, found)
    hint = f"; closest: {close!r}" if close else ""
    return (f"missing column {column!r} (found {found}{hint})",
            f"rename it with data.columns={{{column}: {close or 'your_column'}}}")


def _conversation_problem(turns: Any, role_key: str, content_key: str, roles: tuple[str, ...]) -> tuple[str, str] | None:
    example = f'[{{"{role_key}": "{roles[1]}", "{content_key}": "..."}}, ...]'
    if not isinstance(turns, list) or not turns:
        return f"the conversation must be a non-empty list, got {_show(turns)}", f"write {example}"
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or not {role_key, content_key} <= set(turn):
            return f"turn {index} needs {role_key!r} and {content_key!r}, got {_show(turn)}", f"write {example}"
        if turn[role_key] not in roles:
            return f"turn {index} has {role_key} {turn[role_key]!r}", f"use one of {', '.join(roles)}"
        if not isinstance(turn[content_key], str):
            return (f"turn {index}: {content_key} must be text, got {type(turn[content_key]).__name__}",
                    "store it as a string")
    assistant_roles = {r for r in roles if SHAREGPT_ROLES.get(r, r) == "assistant"}
    if not any(t[role_key] in assistant_roles and t[content_key].strip() for t in turns):
        return "no assistant turn with content: nothing to learn", "add the assistant's reply or remove the record"
    return None


def _show(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def to_trl(values: dict[str, Any], data_format: str) -> dict[str, Any]:
    """One checked record in the shape TRL's SFTTrainer tokenizes (conversational where possible)."""
    if data_format == "instruction":
        prompt = values["instruction"] + (f"\n{values['input']}" if values.get("input") else "")
        return _prompt_completion(prompt, values["output"])
    if data_format == "prompt_completion":
        return _prompt_completion(values["prompt"], values["completion"])
    if data_format == "chat":
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in values["messages"]]}
    if data_format == "sharegpt":
        return {"messages": [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in values["conversations"]]}
    return {"text": values["text"]}


def _prompt_completion(prompt: str, completion: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": completion}]}
