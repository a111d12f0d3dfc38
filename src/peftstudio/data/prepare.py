"""Read the user's data, check every record, and shape it for TRL.

data_sources reads files into located records, data_formats detects, checks and converts
them; here they are shuffled, capped and split. Problems are user errors with `file:line`,
found before any model is loaded. No torch import here: `plan` calls it too.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from peftstudio.data.objective_data import objective_rows
from peftstudio.data.formats import check_column_mapping, check_records, detect_format, rename_columns, to_trl
from peftstudio.data.sources import SourceRecords, read_source
from peftstudio.config.schema import DataSettings
from peftstudio.errors import Problem, UserError


@dataclass(frozen=True)
class PreparedData:
    """Records in TRL's shape, split, with what was detected and a content hash.

    `train_where` / `validation_where` give each row's location (file:line) for messages
    found later, e.g. a sample longer than training.max_seq_length."""

    source: str
    format: str
    format_reason: str
    train_rows: list[dict[str, Any]]
    validation_rows: list[dict[str, Any]]
    sha256: str
    train_where: list[str] = field(default_factory=list)
    validation_where: list[str] = field(default_factory=list)
    split_reason: str = ""
    modality: str = "text"  # "image-text" when any record carries images (data/images.py)


def prepare_data(settings: DataSettings, objective: str = "sft", reward_columns: dict[str, str] | None = None) -> PreparedData:
    """Read, check, convert and split the data named by `settings`, in the shape `objective`
    trains on (`reward_columns`: columns GRPO's rewards read → the key naming the reward)."""
    if objective != "sft":
        from peftstudio.data.objective_data import prepare_objective_rows

        source, data_format, reason, rows = prepare_objective_rows(settings, objective, reward_columns or {})
        return _finish(settings, source, data_format, reason, rows, objective, reward_columns or {})
    check_column_mapping(settings.columns)
    source = read_source(settings.path, settings)
    data_format, reason = detect_format(_renamed(source, settings).records, settings.format)
    rows = _checked_rows(source, settings, data_format)
    if settings.datasets:
        more, digests = extra_rows(settings)
        rows, mixed_format = mix_rows([(data_format, rows)] + more)
        if mixed_format != data_format:
            reason += f"; mixed with {', '.join(sorted({f for f, _ in more}))} data: prompt/completion rows become two-turn chats"
        data_format = mixed_format
        source = SourceRecords(source.source, source.kind, source.records,
                               hashlib.sha256(":".join([source.sha256, *digests]).encode()).hexdigest())
        reason += f"; with {len(settings.datasets)} more dataset(s) from data.datasets"
    return _finish(settings, source, data_format, reason, rows)


def _finish(settings: DataSettings, source: SourceRecords, data_format: str, reason: str, rows: list,
            objective: str = "sft", reward_columns: dict[str, str] | None = None) -> PreparedData:
    """Shuffle, cap and split the checked rows."""
    random.Random(settings.shuffle_seed).shuffle(rows)
    if settings.max_samples is not None:
        rows = rows[: settings.max_samples]
    digest = source.sha256
    if settings.validation_path is not None:
        validation_source = read_source(settings.validation_path, settings)
        validation = _checked_rows(validation_source, settings, data_format) if objective == "sft" else \
            objective_rows(validation_source, settings, data_format, reward_columns or {})
        digest = hashlib.sha256(f"{source.sha256}:{validation_source.sha256}".encode()).hexdigest()
        train, split_reason = rows, f"validation rows from data.validation_path={settings.validation_path}"
    else:
        train, validation = _split(source.source, rows, settings.validation_split)
        split_reason = f"data.validation_split={settings.validation_split:g} of the shuffled rows"
    modality = "image-text" if any("images" in r for _, r in train + validation) else "text"
    return PreparedData(source.source, data_format, reason, [r for _, r in train], [r for _, r in validation], digest,
                        [w for w, _ in train], [w for w, _ in validation], split_reason, modality)


def extra_rows(settings: DataSettings) -> tuple[list[tuple[str, list]], list[str]]:
    """Each data.datasets entry read, checked and converted in its own format and columns."""
    found, digests = [], []
    for entry in settings.datasets:
        own = settings.model_copy(update={"path": entry.path, "format": entry.format, "columns": entry.columns,
                                          "split": entry.split, "subset": entry.subset, "revision": entry.revision})
        check_column_mapping(own.columns)
        source = read_source(entry.path, own)
        data_format, _ = detect_format(_renamed(source, own).records, own.format)
        found.append((data_format, _checked_rows(source, own, data_format)))
        digests.append(source.sha256)
    return found, digests


def mix_rows(parts: list[tuple[str, list]]) -> tuple[list, str]:
    """Concatenate rows of several formats. Conversational and prompt/completion rows mix
    (prompt/completion become a two-turn conversation, trained on the same assistant turn);
    text rows mix only with text."""
    shapes = {"text" if fmt == "text" else "messages" if fmt in ("chat", "sharegpt") else "pc" for fmt, _ in parts}
    if len(shapes) == 1:
        return [row for _, rows in parts for row in rows], parts[0][0]
    if "text" in shapes:
        raise UserError(Problem("data.datasets", f"formats {sorted({f for f, _ in parts})} mix plain text with "
                                "conversations", "train text datasets in a run of their own"))
    mixed = [(where, {"messages": row["prompt"] + row["completion"], **({"images": row["images"]} if "images" in row else {})}
              if "prompt" in row else row)
             for _, rows in parts for where, row in rows]
    return mixed, "chat"


def _renamed(source: SourceRecords, settings: DataSettings) -> SourceRecords:
    records = [rename_columns(record, settings.columns) for record in source.records]
    return SourceRecords(source.source, source.kind, records, source.sha256)


def _checked_rows(source: SourceRecords, settings: DataSettings, data_format: str) -> list[tuple[str, dict]]:
    renamed = _renamed(source, settings)
    texts, refs = _split_images(source, renamed.records, settings)
    check_records(source.source, texts, data_format, settings.columns)
    return [(record.where, with_images(to_trl(record.values, data_format), images))
            for record, images in zip(texts, refs)]


def _split_images(source: SourceRecords, records: list, settings: DataSettings) -> tuple[list, list]:
    """Image parts / `images` columns taken out of the records and checked (data/images.py)."""
    from peftstudio.data.images import has_images, image_records, parse_grid

    if not any(has_images(record.values) for record in records):
        return records, [[] for _ in records]
    base = Path(source.source).parent if source.kind in ("jsonl", "json", "csv", "tsv", "parquet") else Path.cwd()
    return image_records(records, base, parse_grid(settings.image_grid))


def with_images(row: dict[str, Any], refs: list) -> dict[str, Any]:
    from peftstudio.data.images import refs_to_json

    return {**row, "images": refs_to_json(refs)} if refs else row


def _split(source: str, rows: list, fraction: float) -> tuple[list, list]:
    count = round(len(rows) * fraction)
    if fraction > 0 and count == 0:
        raise UserError(Problem(source, f"data.validation_split={fraction:g} of {len(rows)} rows leaves no validation rows",
                                f"raise data.validation_split to at least {1 / len(rows):.2g}, add rows, "
                                "or set data.validation_split=0 (no evaluation)"))
    if count >= len(rows):
        raise UserError(Problem(source, f"data.validation_split={fraction:g} of {len(rows)} rows leaves no training rows",
                                "lower data.validation_split"))
    return rows[count:], rows[:count]
