"""Dataset preview: the CLI's data reader, then a few samples as `peftstudio preview-data`
shows them (data/preview.py: tokenized exactly as training tokenizes them), with thumbnails of
each sample's images beside it (PNG data URLs, at most THUMBNAIL pixels a side).

An uploaded dataset's images must be files inside its own upload (a zip's folder): a path
elsewhere on the server, or a URL the server would fetch, is a problem with the record's
file:line, and no thumbnail of it is ever made."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from peftstudio.data.images import images_confined_to
from peftstudio.data.prepare import prepare_data
from peftstudio.data.preview import sample_previews
from peftstudio.data.tokenizer import prepare_tokenizer
from peftstudio.config.schema import RunConfig
from peftstudio.errors import EnvironmentProblem

SAMPLES = 3
THUMBNAIL = 96
# A tokenizer is worth loading once (the caller serialises calls: see Studio.library_lock).
_SETUPS: dict[tuple, Any] = {}


def preview(path: Path | str, config: RunConfig, folder: Path | None = None) -> dict[str, Any]:
    """Format detected, row count and rendered samples of the file at `path`, read with the
    run's data settings; raises the CLI's UserError (file:line). `folder`: where an upload's
    images must lie (None: the bundled sample, images anywhere)."""
    settings = config.data.model_copy(update={"path": str(path), "validation_split": 0.0})
    with images_confined_to(folder) if folder is not None else nullcontext():
        if config.objective != "sft":
            return objective_preview(settings, config)
        data = prepare_data(settings)
    rows = data.train_rows[:SAMPLES]
    shown = {"format": data.format, "format_reason": data.format_reason, "rows": len(data.train_rows),
             "thumbnails": [thumbnails(row) for row in rows]}
    setup = _tokenizer_setup(config, data.format)
    if setup is None:
        return {**shown, "samples": [_plain(row, config.training.loss_on) for row in rows], "template": None,
                "template_note": f"{config.model.name_or_path}: its tokenizer is not on this machine, so samples "
                                 "are shown as role: text (masking as training will apply it)"}
    samples = [preview["runs"] for preview in sample_previews(config, data, setup, SAMPLES)]
    return {**shown, "samples": samples, "template": setup.template_reason, "template_note": ""}


def objective_preview(settings, config: RunConfig) -> dict[str, Any]:
    """The first rows of preference, KTO or GRPO prompt data as the trainer receives them:
    prompt / chosen / rejected (or completion / label, or the reward's reference columns), as text."""
    from peftstudio.rewards import reward_columns

    needed = reward_columns(config.grpo.rewards) if config.objective == "grpo" else {}
    data = prepare_data(settings, config.objective, needed)
    return {"format": data.format, "format_reason": data.format_reason, "rows": len(data.train_rows),
            "objective": config.objective, "pairs": [pair_view(row) for row in data.train_rows[:SAMPLES]],
            "samples": [], "thumbnails": [], "template": None, "template_note": ""}


# What objective each data shape is for, as the preview suggests it for data SFT cannot read.
SUGGESTED_OBJECTIVES = {"preference": "dpo or orpo", "kto": "kto"}


def objective_shape(path: Path | str, settings) -> str | None:
    """`preference` or `kto` when the file's first record has that shape's columns (after
    data.columns), else None; only read to suggest an objective, never to train."""
    from peftstudio.data.formats import rename_columns
    from peftstudio.data.objective_data import FORMAT_COLUMNS
    from peftstudio.data.sources import read_source
    from peftstudio.errors import PeftStudioError

    try:
        source = read_source(str(path), settings.model_copy(update={"path": str(path)}))
    except PeftStudioError:
        return None
    if not source.records:
        return None
    keys = set(rename_columns(source.records[0], settings.columns).values)
    return next((shape for shape in SUGGESTED_OBJECTIVES if set(FORMAT_COLUMNS[shape]) <= keys), None)


def pair_view(row: dict[str, Any]) -> dict[str, str]:
    """One trainer row as column → text (chat turns joined as `role: text` lines)."""
    return {column: value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else _turn_text(value)
            for column, value in row.items()}


def _turn_text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(turn, dict) and "content" in turn for turn in value):
        if len(value) == 1 and value[0].get("role") in ("user", "assistant"):
            return str(value[0]["content"])
        return "\n".join(f"{turn.get('role', '')}: {turn['content']}" for turn in value)
    return str(value)


def thumbnails(row: dict[str, Any]) -> list[str]:
    """PNG data URLs of the row's images, THUMBNAIL pixels a side at most."""
    import base64
    import io

    from peftstudio.data.images import load_image, refs_from_json

    shown = []
    for ref in refs_from_json(row.get("images", [])):
        image = load_image(ref)
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        shown.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return shown


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
