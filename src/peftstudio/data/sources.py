"""Read a data source into records, each tagged with where it came from.

Sources: JSON Lines, a JSON array, CSV, Parquet, a `datasets` `save_to_disk` directory, or a
hub dataset id. Every record carries a location a user can open: `file:line` for text files
(the line a record starts on, also inside a JSON array or a multi-line CSV cell), `file: row N`
for binary ones. Reading problems (bad JSON, non-UTF-8 bytes, an empty file) are user errors
with that location. No torch import here; `datasets` is imported only for dataset dirs and
hub ids.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.config.schema import EMBEDDED_JSON_SAMPLE_DATA, EMBEDDED_SAMPLE_DATA, DataSettings
from peftstudio.errors import Problem, UserError

MAX_PROBLEMS = 10  # enough to show a pattern without drowning the user
TEXT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
DATASET_DIR_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class Record:
    where: str  # "file:line" or "file: row N": what a problem message points at
    values: dict[str, Any]


@dataclass(frozen=True)
class SourceRecords:
    source: str
    kind: str  # jsonl, json, csv, tsv, parquet, dataset_dir, hub
    records: list[Record]
    sha256: str


def resolve_source(path_text: str) -> str:
    """The path `data.path` names (the bundled sample resolved to its file)."""
    if path_text == EMBEDDED_SAMPLE_DATA:
        from peftstudio.data.sample import SAMPLE_DATA_PATH

        return str(SAMPLE_DATA_PATH)
    if path_text == EMBEDDED_JSON_SAMPLE_DATA:
        from peftstudio.data.sample import JSON_SAMPLE_DATA_PATH

        return str(JSON_SAMPLE_DATA_PATH)
    from peftstudio.data.objective_data import WORD_PROMPTS, WORD_PROMPTS_FILE

    if path_text == WORD_PROMPTS:
        return str(WORD_PROMPTS_FILE)
    if path_text.startswith("embedded:") and path_text.endswith(("vision-sample", "grid-sample")):
        from peftstudio.data.vision_sample import SAMPLE_FILES, sample_path

        if path_text in SAMPLE_FILES:
            return str(sample_path(path_text))
    return path_text


def read_source(path_text: str, settings: DataSettings) -> SourceRecords:
    """Every record of the file, directory or hub dataset named by `path_text`."""
    path = Path(resolve_source(path_text)).expanduser()
    if path.is_dir():
        return _read_dataset_dir(path, settings.split)
    if path.is_file():
        return _read_file(path)
    if _looks_like_hub_id(path_text):
        return _read_hub(path_text, settings)
    raise UserError(Problem(path_text, "data file not found",
                            "set data.path to a .jsonl/.json/.csv/.parquet file, a save_to_disk directory, "
                            "or a hub dataset id (org/name)"))


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and Path(text).suffix == ""


def _read_file(path: Path) -> SourceRecords:
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(Problem(str(path), "the file is empty", "add records (one JSON object per line for .jsonl)"))
    digest = hashlib.sha256(raw).hexdigest()
    if path.suffix == ".parquet":
        return SourceRecords(str(path), "parquet", _read_parquet(path), digest)
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    text = decode_utf8(path, raw)
    if kind is None:
        kind = "json" if text.lstrip().startswith("[") else "jsonl"
    if kind in ("csv", "tsv"):
        records = _read_csv(path, text, "\t" if kind == "tsv" else ",")
    elif kind == "json" or text.lstrip().startswith("["):
        records = _read_json_array(path, text)
    else:
        records = _read_jsonl(path, text)
    if not records:
        raise UserError(Problem(str(path), "the file holds no records", "add records, or point data.path at another file"))
    return SourceRecords(str(path), kind, records, digest)


def decode_utf8(path: Path, raw: bytes) -> str:
    """The file's text; every line with non-UTF-8 bytes is reported (line, byte, column)."""
    problems = []
    for number, line in enumerate(raw.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(f"{path}:{number}",
                                    f"not UTF-8 (byte {line[error.start]:#04x} at column {error.start + 1})",
                                    "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"))
    if problems:
        raise UserError(problems[:MAX_PROBLEMS],
                        headline=f"{path}: {len(problems)} non-UTF-8 lines" if len(problems) > 1 else None)
    return raw.decode("utf-8").removeprefix("\ufeff")


def _read_jsonl(path: Path, text: str) -> list[Record]:
    records, problems = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(f"{path}:{number}", f"invalid JSON: {error.msg} (column {error.colno}): {_clip(line)}",
                                    "each line must be one complete JSON object"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(f"{path}:{number}", f"expected a JSON object, got {type(value).__name__}",
                                    'write {"column": value, ...} on each line'))
            continue
        records.append(Record(f"{path}:{number}", value))
    if problems:
        raise UserError(problems[:MAX_PROBLEMS],
                        headline=f"{path}: {len(problems)} bad lines" if len(problems) > 1 else None)
    return records


def _read_json_array(path: Path, text: str) -> list[Record]:
    """Decode the array element by element so each record keeps the line it starts on."""
    decoder = json.JSONDecoder()
    position, line = _skip_space(text, 0), 1
    if not text.startswith("[", position):
        raise UserError(Problem(f"{path}:1", "a .json data file must hold an array of objects",
                                "write [{...}, {...}], or use JSON Lines (.jsonl)"))
    records, position, counted = [], _skip_space(text, position + 1), 0
    while not text.startswith("]", position):
        line += text.count("\n", counted, position)
        counted = position
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise UserError(Problem(f"{path}:{error.lineno}", f"invalid JSON: {error.msg} (column {error.colno})",
                                    "fix the syntax there")) from None
        if not isinstance(value, dict):
            raise UserError(Problem(f"{path}:{line}", f"expected a JSON object, got {type(value).__name__}",
                                    "the array must hold objects: [{\"column\": value}, ...]"))
        records.append(Record(f"{path}:{line}", value))
        position = _skip_space(text, position)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif not text.startswith("]", position):
            where = f"{path}:{text.count(chr(10), 0, position) + 1}"
            raise UserError(Problem(where, "invalid JSON: expected ',' or ']' after an array element", "fix the syntax there"))
    return records


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _read_csv(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not reader.fieldnames or any(not name for name in reader.fieldnames):
        raise UserError(Problem(f"{path}:1", f"the header row names no columns or an empty one: {reader.fieldnames}",
                                "the first line must name every column, e.g. prompt,completion"))
    records, start = [], reader.line_num + 1
    for row in reader:
        if None in row:  # csv puts the surplus cells of a too-long row under the key None
            raise UserError(Problem(f"{path}:{start}", f"{len(reader.fieldnames) + len(row[None])} cells but the header "
                                    f"names {len(reader.fieldnames)} columns", "quote cells that contain the delimiter"))
        records.append(Record(f"{path}:{start}", dict(row)))
        start = reader.line_num + 1
    return records


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as parquet

    try:
        rows = parquet.read_table(path).to_pylist()
    except Exception as error:  # noqa: BLE001 - any arrow failure means an unreadable file
        raise UserError(Problem(str(path), f"not a readable Parquet file: {error}", "re-export the file")) from None
    if not rows:
        raise UserError(Problem(str(path), "the file is empty (0 rows)", "add records, or point data.path at another file"))
    return [Record(f"{path}: row {index}", row) for index, row in enumerate(rows, 1)]


def _read_dataset_dir(path: Path, split: str) -> SourceRecords:
    if not any((path / marker).is_file() for marker in DATASET_DIR_MARKERS):
        raise UserError(Problem(str(path), "a directory, but not one written by datasets' save_to_disk",
                                "point data.path at a data file, or at a directory holding dataset_info.json"))
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        dataset = _pick_split(str(path), dataset, split)
    digest = hashlib.sha256(f"{path}:{dataset._fingerprint}".encode()).hexdigest()
    return SourceRecords(str(path), "dataset_dir", _dataset_records(str(path), dataset), digest)


def _read_hub(dataset_id: str, settings: DataSettings) -> SourceRecords:
    from datasets import load_dataset

    try:
        dataset = load_dataset(dataset_id, settings.subset, split=settings.split, revision=settings.revision)
    except ValueError as error:  # an unknown split or subset
        raise UserError(Problem("data.split", f"{dataset_id}: {str(error).splitlines()[0]}",
                                "set data.split (and data.subset) to one the dataset has")) from None
    except Exception as error:  # noqa: BLE001 - offline, private, or no such dataset
        raise UserError(Problem("data.path", f"cannot load hub dataset {dataset_id!r}: {str(error).splitlines()[0]}",
                                "check the id, your network and HF_TOKEN, or use a local file")) from None
    digest = hashlib.sha256(f"{dataset_id}:{dataset._fingerprint}".encode()).hexdigest()
    return SourceRecords(dataset_id, "hub", _dataset_records(dataset_id, dataset), digest)


def _pick_split(where: str, splits, split: str):
    if split not in splits:
        raise UserError(Problem("data.split", f"{where} has splits {sorted(splits)}, not {split!r}",
                                f"set data.split={sorted(splits)[0]}"))
    return splits[split]


def _dataset_records(where: str, dataset) -> list[Record]:
    if len(dataset) == 0:
        raise UserError(Problem(where, "the dataset is empty (0 rows)", "point data.path at another dataset or split"))
    return [Record(f"{where}: row {index}", row) for index, row in enumerate(dataset.to_list(), 1)]


def _clip(text: str, width: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"
