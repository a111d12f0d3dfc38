"""Dataset preview: the CLI's data reader, then a few samples rendered with the model's chat
template, split into the part the loss ignores (masked) and the part the model learns."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from peftstudio.build.data import prepare_data
from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelSettings, RunConfig

SAMPLES = 3
# transformers' lazy imports are not thread-safe, and a tokenizer is worth loading once.
_TOKENIZER_LOCK = threading.Lock()
_TOKENIZERS: dict[tuple, Any] = {}


def preview(path: Path | str, config: RunConfig) -> dict[str, Any]:
    """Format detected, row count and rendered samples of the file at `path`, read with the
    run's data settings; raises the CLI's UserError (file:line)."""
    settings = config.data.model_copy(update={"path": str(path), "validation_split": 0.0})
    data = prepare_data(settings)
    rows = data.train_rows[:SAMPLES]
    labelled = _labelled_samples(config, data.format, rows)
    if labelled is not None:
        return {"format": data.format, "format_reason": data.format_reason, "rows": len(data.train_rows),
                **labelled}
    template = _template(config.model)
    samples = [_segments(template, row, config.training.loss_on) for row in rows]
    return {
        "format": data.format,
        "format_reason": data.format_reason,
        "rows": len(data.train_rows),
        "samples": samples,
        "template": template.name if template else None,
        "template_note": "" if template else f"{config.model.name_or_path}: its chat template is not available "
                                             "without a download, so samples are shown as role: text",
    }


def _labelled_samples(config: RunConfig, data_format: str, rows: list[dict]) -> dict[str, Any] | None:
    """Samples cut where training's own labels switch between masked and trained (and where
    max_seq_length truncates), when this build tokenizes rows itself (build/tokenization.py)."""
    try:
        from peftstudio.build.tokenization import IGNORE, tokenize_row
        from peftstudio.build.tokenizer import prepare_tokenizer
    except ImportError:
        return None
    from peftstudio.errors import EnvironmentProblem

    key = ("setup", config.model.name_or_path, config.model.revision, config.data.chat_template, data_format)
    with _TOKENIZER_LOCK:
        try:
            if key not in _TOKENIZERS:
                _TOKENIZERS[key] = prepare_tokenizer(config, data_format)
        except EnvironmentProblem:
            return None  # not on this machine: the role: text rendering below needs no download
        setup = _TOKENIZERS[key]
    samples = []
    for row in rows:
        tokenized = tokenize_row(setup.tokenizer, row, config.training.loss_on, setup.has_generation_markers)
        samples.append(_label_runs(setup.tokenizer, tokenized.input_ids, tokenized.labels, IGNORE,
                                   config.training.max_seq_length))
    return {"samples": samples, "template": setup.template_reason, "template_note": ""}


def _label_runs(tokenizer, ids: list[int], labels: list[int], ignore: int, max_length: int) -> list[dict[str, Any]]:
    """Consecutive tokens with the same (trained, truncated) state, decoded together."""
    pieces: list[dict[str, Any]] = []
    for index, (token, label) in enumerate(zip(ids, labels)):
        state = {"trained": label != ignore and index < max_length, "truncated": index >= max_length}
        if pieces and all(pieces[-1][k] == v for k, v in state.items()):
            pieces[-1]["ids"].append(token)
        else:
            pieces.append({**state, "ids": [token]})
    return [{"text": tokenizer.decode(p.pop("ids")), **p} for p in pieces]


class _Template:
    def __init__(self, name: str, tokenizer):
        self.name = name
        self.tokenizer = tokenizer

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _template(model: ModelSettings) -> _Template | None:
    """The model's tokenizer, when it is on this machine already (no download for a preview)."""
    local = Path(model.name_or_path)
    if model.name_or_path != EMBEDDED_MODEL_ID and not (local.is_absolute() and local.is_dir()):
        return None
    from peftstudio.build.model import load_tokenizer, model_location

    key = (model.name_or_path, model.revision, model.trust_remote_code)
    with _TOKENIZER_LOCK:
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = load_tokenizer(model_location(model), model)
        tokenizer = _TOKENIZERS[key]
    return _Template(model.name_or_path, tokenizer) if tokenizer.chat_template else None


def _segments(template: _Template | None, row: dict[str, Any], loss_on: str) -> list[dict[str, Any]]:
    """[{text, trained}] pieces of one sample, in order."""
    if "text" in row:
        return [{"text": row["text"], "trained": True}]
    if "messages" in row:
        pieces = _chat_pieces(template, row["messages"])
    else:
        pieces = _prompt_completion_pieces(template, row["prompt"], row["completion"])
    if loss_on == "all":
        pieces = [{**piece, "trained": True} for piece in pieces]
    return pieces


def _prompt_completion_pieces(template: _Template | None, prompt: list[dict], completion: list[dict]) -> list[dict]:
    if template is None:
        return [{"text": _plain(prompt) + "\n", "trained": False}, {"text": _plain(completion), "trained": True}]
    prompt_text = template.render(prompt, generation_prompt=True)
    full = template.render(prompt + completion)
    completion_text = full[len(prompt_text):] if full.startswith(prompt_text) else full
    return [{"text": prompt_text, "trained": False}, {"text": completion_text, "trained": True}]


def _chat_pieces(template: _Template | None, messages: list[dict]) -> list[dict]:
    if template is None:
        return [{"text": _plain([m]) + "\n", "trained": m["role"] == "assistant"} for m in messages]
    pieces, rendered = [], ""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            before = template.render(messages[:index], generation_prompt=True) if index else ""
            if before.startswith(rendered) and len(before) > len(rendered):
                pieces.append({"text": before[len(rendered):], "trained": False})
                rendered = before
        upto = template.render(messages[: index + 1])
        piece = upto[len(rendered):] if upto.startswith(rendered) else upto
        pieces.append({"text": piece, "trained": message["role"] == "assistant"})
        rendered = upto
    return pieces


def _plain(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
