"""Dataset preview: the CLI's data reader, then a few samples tokenized exactly as training
tokenizes them (data/tokenization.py), cut where the labels switch between the part the loss
ignores (masked) and the part the model learns, and where max_seq_length truncates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftstudio.data.prepare import prepare_data
from peftstudio.data.tokenization import IGNORE, tokenize_row
from peftstudio.data.tokenizer import prepare_tokenizer
from peftstudio.config.schema import RunConfig
from peftstudio.errors import EnvironmentProblem

SAMPLES = 3
# A tokenizer is worth loading once (the caller serialises calls: see Studio.library_lock).
_SETUPS: dict[tuple, Any] = {}


def preview(path: Path | str, config: RunConfig) -> dict[str, Any]:
    """Format detected, row count and rendered samples of the file at `path`, read with the
    run's data settings; raises the CLI's UserError (file:line)."""
    settings = config.data.model_copy(update={"path": str(path), "validation_split": 0.0})
    data = prepare_data(settings)
    rows = data.train_rows[:SAMPLES]
    shown = {"format": data.format, "format_reason": data.format_reason, "rows": len(data.train_rows)}
    setup = _tokenizer_setup(config, data.format)
    if setup is None:
        return {**shown, "samples": [_plain(row, config.training.loss_on) for row in rows], "template": None,
                "template_note": f"{config.model.name_or_path}: its tokenizer is not on this machine, so samples "
                                 "are shown as role: text (masking as training will apply it)"}
    samples = []
    for row in rows:
        tokenized = tokenize_row(setup.tokenizer, row, config.training.loss_on, setup.has_generation_markers)
        samples.append(_label_runs(setup.tokenizer, tokenized.input_ids, tokenized.labels, config.training.max_seq_length))
    return {**shown, "samples": samples, "template": setup.template_reason, "template_note": ""}


def _tokenizer_setup(config: RunConfig, data_format: str):
    key = (config.model.name_or_path, config.model.revision, config.data.chat_template, data_format)
    if key not in _SETUPS:
        try:
            _SETUPS[key] = prepare_tokenizer(config, data_format)
        except EnvironmentProblem:
            return None
    return _SETUPS[key]


def _label_runs(tokenizer, ids: list[int], labels: list[int], max_length: int) -> list[dict[str, Any]]:
    """Consecutive tokens with the same (trained, truncated) state, decoded together."""
    pieces: list[dict[str, Any]] = []
    for index, (token, label) in enumerate(zip(ids, labels)):
        state = {"trained": label != IGNORE and index < max_length, "truncated": index >= max_length}
        if pieces and all(pieces[-1][k] == v for k, v in state.items()):
            pieces[-1]["ids"].append(token)
        else:
            pieces.append({**state, "ids": [token]})
    return [{"text": tokenizer.decode(piece.pop("ids")), **piece} for piece in pieces]


def _plain(row: dict[str, Any], loss_on: str) -> list[dict[str, Any]]:
    if "text" in row:
        return [{"text": row["text"], "trained": True, "truncated": False}]
    messages = row.get("messages") or row["prompt"] + row["completion"]
    return [{"text": f"{m['role']}: {m['content']}\n", "trained": loss_on == "all" or m["role"] == "assistant",
             "truncated": False}
            for m in messages]
