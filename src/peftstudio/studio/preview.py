"""Dataset preview: the CLI's data reader, then a few samples as `peftstudio preview-data`
shows them (data/preview.py: tokenized exactly as training tokenizes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftstudio.data.prepare import prepare_data
from peftstudio.data.preview import sample_previews
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
    samples = [preview["runs"] for preview in sample_previews(config, data, setup, SAMPLES)]
    return {**shown, "samples": samples, "template": setup.template_reason, "template_note": ""}


def _tokenizer_setup(config: RunConfig, data_format: str):
    from peftstudio.plan.pipeline import missing_tokenizer

    key = (config.model.name_or_path, config.model.revision, config.data.chat_template, data_format)
    if missing_tokenizer(config):  # a model directory with a config.json only
        return None
    if key not in _SETUPS:
        try:
            _SETUPS[key] = prepare_tokenizer(config, data_format)
        except EnvironmentProblem:
            return None
    return _SETUPS[key]


def _plain(row: dict[str, Any], loss_on: str) -> list[dict[str, Any]]:
    if "text" in row:
        return [{"text": row["text"], "trained": True, "truncated": False}]
    messages = row.get("messages") or row["prompt"] + row["completion"]
    return [{"text": f"{m['role']}: {m['content']}\n", "trained": loss_on == "all" or m["role"] == "assistant",
             "truncated": False}
            for m in messages]
