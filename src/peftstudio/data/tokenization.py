"""Tokenize the prepared rows once, with the labels the loss will use, and measure them.

The rows reach SFTTrainer already tokenized (`input_ids` + `labels`), so the lengths,
over-limit counts and label masks `plan` reports are the ones training sees. The masks follow
TRL's rules for its `completion_only_loss` / `assistant_only_loss`:
- prompt/completion rows (instruction data): the completion starts where the tokenized
  prompt (with the generation prompt) and prompt + completion stop agreeing;
- chat rows: every assistant turn with its end-of-turn token (`data.train_on_turns=last`: the
  final one), found by the template's markers or located in its rendering (data/turns.py);
- prompt/completion rows with a chat template: the completion turn, found the same way;
- text rows: every token (an EOS is appended, as TRL does).
With `training.loss_on=all` every token is a label. BOS appears once, whatever the template
and the data bring.

Samples over `training.max_seq_length` are truncated (keep the start), dropped, or refused
(`data.overlong`). Rows left without a single label are dropped; if a whole sample batch
would have none, the run is refused with the cause and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from peftstudio.data.prepare import PreparedData
from peftstudio.data.tokenizer import TokenizerSetup
from peftstudio.data.turns import IGNORE, TurnProblem, encode_conversation, prepare_messages
from peftstudio.errors import Problem, UserError

__all__ = ["IGNORE", "TokenizedRow", "TokenizedData", "TokenStats", "Masking", "tokenize_row", "tokenize_data"]
MAX_LISTED = 10


@dataclass(frozen=True)
class TokenizedRow:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenStats:
    """What `plan` reports about the tokenized training rows."""

    percentiles: dict[str, int]  # p50, p90, p99, max (before truncation)
    over_limit: int
    overlong_action: str
    masked_dropped: int
    padding_waste: float
    label_tokens: int
    total_tokens: int


@dataclass
class TokenizedData:
    prepared: PreparedData
    setup: TokenizerSetup
    train: list[TokenizedRow]
    validation: list[TokenizedRow]
    stats: TokenStats
    warnings: list[str] = field(default_factory=list)
    image_stats: dict | None = None  # text and image tokens apart (data/vision_tokens.py); None: text only

    def as_columns(self, rows: list[TokenizedRow]) -> dict[str, list[list[int]]]:
        columns = {"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]}
        if self.image_stats is not None:  # the collator loads them (train/vision_collator.py)
            columns["image_refs"] = [getattr(r, "images", "[]") for r in rows]
        return columns


@dataclass(frozen=True)
class Masking:
    """What the loss is computed on: training.loss_on, data.train_on_turns, data.system_message."""

    loss_on: str = "completion"
    train_on_turns: str = "all"
    system_message: str = "keep"

    @classmethod
    def of(cls, config) -> "Masking":
        return cls(config.training.loss_on, config.data.train_on_turns, config.data.system_message)


def tokenize_row(setup: TokenizerSetup, row: dict[str, Any], masking: Masking = Masking()) -> TokenizedRow:
    """One prepared row (TRL shape) → input_ids and labels; a TurnProblem when the template
    refuses the conversation or its answers cannot be found."""
    tokenizer = setup.tokenizer
    if "messages" in row or ("prompt" in row and tokenizer.chat_template):
        messages = row["messages"] if "messages" in row else row["prompt"] + row["completion"]
        turns = masking.train_on_turns if "messages" in row else "last"
        encoded = encode_conversation(tokenizer, prepare_messages(messages, masking.system_message), setup.chat, turns)
        return _bos_once(tokenizer, encoded.input_ids, encoded.input_ids if masking.loss_on == "all" else encoded.labels)
    if "prompt" in row:
        prompt_ids, ids = _plain_prompt_completion_ids(tokenizer, row)
        start = _common_prefix_length(prompt_ids, ids)
        return _bos_once(tokenizer, ids, ids if masking.loss_on == "all" else [IGNORE] * start + ids[start:])
    text = row["text"] if row["text"].endswith(tokenizer.eos_token) else row["text"] + tokenizer.eos_token
    ids = list(tokenizer(text)["input_ids"])
    return _bos_once(tokenizer, ids, ids)


def _plain_prompt_completion_ids(tokenizer, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    # No template (plain prompt_completion data on a base model): text joined, EOS appended, as TRL does.
    prompt_text, completion_text = row["prompt"][-1]["content"], row["completion"][-1]["content"]
    prompt = tokenizer(prompt_text)["input_ids"]
    full = tokenizer(prompt_text + completion_text + tokenizer.eos_token)["input_ids"]
    return list(prompt), list(full)


def _bos_once(tokenizer, ids: list[int], labels: list[int]) -> TokenizedRow:
    """Drop repeated leading BOS tokens: a template's BOS plus the tokenizer's, or text that
    already starts with one (a pre-rendered chat)."""
    bos = tokenizer.bos_token_id
    repeats = 0
    while bos is not None and repeats + 1 < len(ids) and ids[repeats] == bos and ids[repeats + 1] == bos:
        repeats += 1
    return TokenizedRow(list(ids[repeats:]), list(labels[repeats:]))


def _common_prefix_length(first: list[int], second: list[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length


def percentiles(lengths: list[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99/max of the token lengths."""
    if not lengths:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted(lengths)
    rank = {name: ordered[max(math.ceil(share * len(ordered)) - 1, 0)]
            for name, share in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    return {**rank, "max": ordered[-1]}


def padding_waste(lengths: list[int], micro_batch_size: int) -> float:
    """Share of padding tokens when consecutive micro-batches are padded to their longest row."""
    if not lengths:
        return 0.0
    padded = sum(max(lengths[i:i + micro_batch_size]) * len(lengths[i:i + micro_batch_size])
                 for i in range(0, len(lengths), micro_batch_size))
    return 1.0 - sum(lengths) / padded


def limit_lengths(rows: list[TokenizedRow], where: list[str], max_length: int, action: str) -> tuple[list, list, int]:
    """Apply `data.overlong` to the rows; returns (rows, where, how many were over)."""
    over = [i for i, row in enumerate(rows) if len(row.input_ids) > max_length]
    if not over:
        return rows, where, 0
    if action == "error":
        problems = [Problem(where[i], f"{len(rows[i].input_ids)} tokens, over training.max_seq_length={max_length}")
                    for i in over[:MAX_LISTED]]
        problems.append(Problem("fix", f"raise training.max_seq_length (longest sample: "
                                f"{max(len(rows[i].input_ids) for i in over)} tokens), or set data.overlong=truncate "
                                "(keep the start) or data.overlong=drop"))
        raise UserError(problems, headline=f"{len(over)} of {len(rows)} samples are longer than "
                        f"training.max_seq_length={max_length} (data.overlong=error)")
    if action == "drop":
        dropped = set(over)
        kept = [i for i in range(len(rows)) if i not in dropped]
        return [rows[i] for i in kept], [where[i] for i in kept], len(over)
    cut = [replace(r, input_ids=r.input_ids[:max_length], labels=r.labels[:max_length]) for r in rows]
    return cut, where, len(over)


def tokenize_data(prepared: PreparedData, setup: TokenizerSetup, max_length: int, overlong: str, masking: Masking,
                  micro_batch_size: int) -> TokenizedData:
    """Tokenize, limit lengths, check labels and measure: everything `plan` reports about tokens."""
    loss_on = masking.loss_on
    train = _tokenize_rows(setup, prepared.train_rows, prepared.train_where, masking)
    validation = _tokenize_rows(setup, prepared.validation_rows, prepared.validation_where, masking)
    spread = percentiles([len(row.input_ids) for row in train])
    image_stats = _image_checks(prepared, train, validation, max_length, overlong)
    train, train_where, over = limit_lengths(train, prepared.train_where, max_length, overlong)
    validation, validation_where, _ = limit_lengths(validation, prepared.validation_where, max_length, overlong)
    if not train:
        raise UserError(Problem(prepared.source, f"every sample is longer than training.max_seq_length={max_length} and "
                                "data.overlong=drop drops them all", "raise training.max_seq_length or use data.overlong=truncate"))
    refuse_unlabelled_batch(train[:micro_batch_size], train_where[:micro_batch_size], setup, prepared, loss_on, max_length)
    kept_train = [row for row in train if _has_label(row)]
    kept_validation = [row for row in validation if _has_label(row)]
    dropped = len(train) - len(kept_train) + len(validation) - len(kept_validation)
    lengths = [len(row.input_ids) for row in kept_train]
    stats = TokenStats(spread, over, overlong, dropped, round(padding_waste(lengths, micro_batch_size), 4),
                       sum(sum(label != IGNORE for label in row.labels) for row in kept_train), sum(lengths))
    warnings = []
    if dropped:
        warnings.append(f"{dropped} sample(s) have no token to learn from after masking and truncation "
                        f"(training.loss_on={loss_on}, max_seq_length={max_length}); they are left out")
    return TokenizedData(prepared, setup, kept_train, kept_validation, stats, warnings, image_stats)


def _image_checks(prepared: PreparedData, train: list, validation: list, max_length: int, overlong: str):
    if prepared.modality != "image-text":
        return None
    from peftstudio.data.vision_tokens import image_token_stats, refuse_cut_images

    refuse_cut_images(train, prepared.train_where, max_length, overlong)
    refuse_cut_images(validation, prepared.validation_where, max_length, overlong)
    stats = image_token_stats(train)
    if stats is not None:
        stats["longest_row"] = prepared.train_where[stats.pop("longest_row_index")] if prepared.train_where else None
    return stats


def _tokenize_rows(setup: TokenizerSetup, rows: list[dict], where: list[str], masking: Masking) -> list[TokenizedRow]:
    """Every row tokenized; the rows a template refuses are reported together, each with its file:line."""
    tokenized, problems, refused = [], [], 0
    for index, row in enumerate(rows):
        try:
            if "images" in row:
                from peftstudio.data.vision_tokens import tokenize_image_row

                tokenized.append(tokenize_image_row(setup, row, masking, setup.image_grid))
                continue
            tokenized.append(tokenize_row(setup, row, masking))
        except TurnProblem as problem:
            refused += 1
            if len(problems) < MAX_LISTED:
                problems.append(Problem(where[index] if index < len(where) else f"row {index}", problem.message,
                                        problem.fix))
    if problems:
        raise UserError(problems, headline=f"{refused} of {len(rows)} conversation(s) cannot be tokenized with the chat "
                        f"template ({setup.template_reason})")
    return tokenized


def _has_label(row: TokenizedRow) -> bool:
    return any(label != IGNORE for label in row.labels)


def refuse_unlabelled_batch(batch: list[TokenizedRow], where: list[str], setup: TokenizerSetup, prepared: PreparedData,
                            loss_on: str, max_length: int) -> None:
    """A micro-batch with every label masked trains nothing (loss 0 or NaN): name why and the fix."""
    if any(_has_label(row) for row in batch):
        return
    if any(len(row.input_ids) >= max_length for row in batch):
        cause = f"training.max_seq_length={max_length} cuts every answer off (the prompts alone fill it)"
        fix = "raise training.max_seq_length, shorten the prompts, or set data.overlong=drop"
    else:
        cause = f"no token of these samples is a completion token (training.loss_on={loss_on})"
        fix = "check that the answers are not empty, or set training.loss_on=all"
    raise UserError(Problem(where[0] if where else prepared.source,
                            f"every label of the first micro-batch ({len(batch)} samples) is masked: {cause}", fix),
                    headline="nothing to learn from")
