"""Read the user's data, check every record, and shape it for TRL.

Problems are user errors with `file:line`, found before any model is loaded: bad JSON, a
record that is not an object, missing or misnamed columns (with the columns found and the
closest match), empty or non-string text, non-UTF-8 bytes, an empty file, a split that leaves
nothing to train or evaluate on. No torch import here: `plan` calls it too.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.config.schema import EMBEDDED_SAMPLE_DATA, DataSettings
from peftstudio.errors import Problem, UserError

# The columns each format needs, after `data.columns` renaming.
REQUIRED_COLUMNS = {
    "instruction": ("instruction", "output"),
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
MAX_PROBLEMS = 10  # enough to show a pattern without drowning the user


@dataclass(frozen=True)
class PreparedData:
    """Records in TRL's shape, split, with what was detected and a content hash."""

    source: str
    format: str
    format_reason: str
    train_rows: list[dict[str, Any]]
    validation_rows: list[dict[str, Any]]
    sha256: str


def data_file(settings: DataSettings) -> Path:
    if settings.path == EMBEDDED_SAMPLE_DATA:
        from peftstudio.build.sample_data import SAMPLE_DATA_PATH

        return Path(SAMPLE_DATA_PATH)
    return Path(settings.path).expanduser()


def prepare_data(settings: DataSettings) -> PreparedData:
    """Read, check, convert and split the data named by `settings`."""
    path = data_file(settings)
    raw = _read_bytes(path)
    records = _parse_records(path, raw)
    records = [_rename(record, settings.columns) for record in records]
    data_format, reason = _detect_format(path, records, settings.format)
    _check_records(path, records, data_format, settings.columns)
    rows = [(line, _to_trl(record, data_format)) for line, record in records]
    random.Random(settings.shuffle_seed).shuffle(rows)
    if settings.max_samples is not None:
        rows = rows[: settings.max_samples]
    train, validation = _split(path, [row for _, row in rows], settings.validation_split)
    return PreparedData(str(path), data_format, reason, train, validation, hashlib.sha256(raw).hexdigest())


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(Problem(str(path), "data file not found", "set data.path to an existing .jsonl or .json file"))
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(Problem(str(path), "the file is empty", "add records, one JSON object per line"))
    return raw


def _decode_lines(path: Path, raw: bytes) -> list[str]:
    lines = raw.split(b"\n")
    problems = []
    for number, line in enumerate(lines, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(f"{path}:{number}", f"not UTF-8 (byte {line[error.start]:#04x} at column {error.start + 1})",
                                    "re-save the file as UTF-8"))
    if problems:
        raise UserError(problems[:MAX_PROBLEMS], headline=f"{path}: {len(problems)} non-UTF-8 line(s)")
    return [line.decode("utf-8") for line in lines]


def _parse_records(path: Path, raw: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs from JSON Lines, or from a JSON array file."""
    lines = _decode_lines(path, raw)
    if path.suffix == ".json" or raw.lstrip().startswith(b"["):
        return _parse_json_array(path, "\n".join(lines))
    records, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(f"{path}:{number}", f"invalid JSON: {error.msg} (column {error.colno})",
                                    "each line must be one complete JSON object"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(f"{path}:{number}", f"expected a JSON object, got {type(record).__name__}",
                                    'write {"column": value, ...} on each line'))
            continue
        records.append((number, record))
    if problems:
        raise UserError(problems[:MAX_PROBLEMS], headline=f"{path}: {len(problems)} bad line(s)")
    return records


def _parse_json_array(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(Problem(f"{path}:{error.lineno}", f"invalid JSON: {error.msg}", "fix the syntax there")) from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise UserError(Problem(str(path), "a .json data file must hold an array of objects", "or use JSON Lines (.jsonl)"))
    # A JSON array has no per-record line; report the record's 1-based index instead.
    return list(enumerate(data, 1))


def _rename(numbered: tuple[int, dict[str, Any]], columns: dict[str, str]) -> tuple[int, dict[str, Any]]:
    number, record = numbered
    if not columns:
        return numbered
    renamed = dict(record)
    for target, source in columns.items():
        if source in renamed:
            renamed[target] = renamed.pop(source)
    return number, renamed


def _detect_format(path: Path, records: list[tuple[int, dict[str, Any]]], requested: str) -> tuple[str, str]:
    if requested != "auto":
        return requested, "data.format set explicitly"
    keys = set(records[0][1])
    for name in ("chat", "instruction", "prompt_completion", "text"):
        if set(REQUIRED_COLUMNS[name]) <= keys:
            return name, f"detected from the first record's columns ({', '.join(sorted(keys))})"
    raise UserError(Problem(f"{path}:{records[0][0]}", f"cannot tell the format from columns {sorted(keys)}",
                            "set data.format=instruction|chat|prompt_completion|text and map columns with "
                            "data.columns={target: your_column}"))


def _check_records(path: Path, records: list[tuple[int, dict[str, Any]]], data_format: str, columns: dict[str, str]) -> None:
    problems = []
    for number, record in records:
        problem = _record_problem(record, data_format, columns)
        if problem:
            problems.append(Problem(f"{path}:{number}", *problem))
    if problems:
        raise UserError(problems[:MAX_PROBLEMS], headline=f"{path}: {len(problems)} bad record(s) for format {data_format}")


def _record_problem(record: dict[str, Any], data_format: str, columns: dict[str, str]) -> tuple[str, str] | None:
    for column in REQUIRED_COLUMNS[data_format]:
        if column not in record:
            close = difflib.get_close_matches(column, list(record), n=1)
            hint = f"; closest: {close[0]!r}" if close else ""
            return (f"missing column {column!r} (found {sorted(record)}{hint})",
                    f"rename it with data.columns={{{column}: {close[0] if close else 'your_column'}}}")
    if data_format == "chat":
        return _chat_problem(record["messages"])
    for column in REQUIRED_COLUMNS[data_format] + (("input",) if data_format == "instruction" else ()):
        value = record.get(column, "")
        if not isinstance(value, str):
            return f"column {column!r} must be text, got {type(value).__name__}", "store it as a string"
    if not record[REQUIRED_COLUMNS[data_format][-1]].strip():
        return f"column {REQUIRED_COLUMNS[data_format][-1]!r} is empty", "remove the record or fill it in"
    return None


def _chat_problem(messages: Any) -> tuple[str, str] | None:
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list", 'write [{"role": "user", "content": "..."}, ...]'
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            return f"message {index} needs role and content", 'write {"role": "user", "content": "..."}'
        if message["role"] not in ("system", "user", "assistant"):
            return f"message {index} has role {message['role']!r}", "use system, user or assistant"
    if not any(m["role"] == "assistant" and str(m["content"]).strip() for m in messages):
        return "no assistant message with content: nothing to learn", "add the assistant's reply"
    return None


def _to_trl(record: dict[str, Any], data_format: str) -> dict[str, Any]:
    """One record in the shape TRL's SFTTrainer tokenizes (conversational where possible)."""
    if data_format == "instruction":
        prompt = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
        return {"prompt": [{"role": "user", "content": prompt}],
                "completion": [{"role": "assistant", "content": record["output"]}]}
    if data_format == "chat":
        return {"messages": [{"role": m["role"], "content": str(m["content"])} for m in record["messages"]]}
    if data_format == "prompt_completion":
        return {"prompt": [{"role": "user", "content": record["prompt"]}],
                "completion": [{"role": "assistant", "content": record["completion"]}]}
    return {"text": record["text"]}


def _split(path: Path, rows: list[dict[str, Any]], fraction: float) -> tuple[list, list]:
    count = round(len(rows) * fraction)
    if fraction > 0 and count == 0:
        raise UserError(Problem(str(path), f"data.validation_split={fraction} of {len(rows)} rows leaves no validation rows",
                                "raise data.validation_split, add rows, or set data.validation_split=0"))
    if count >= len(rows):
        raise UserError(Problem(str(path), f"data.validation_split={fraction} leaves no training rows",
                                "lower data.validation_split"))
    return rows[count:], rows[:count]
