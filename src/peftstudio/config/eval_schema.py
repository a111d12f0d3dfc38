"""The schema of scoring functions (GRPO rewards and evaluation metrics: one registry,
`peftstudio.rewards`) and of generation-based evaluation (`eval.*`).

Kept apart from schema.py so the scoring keys read as one unit. Field docstrings are the user
documentation (`explain eval`, `explain eval.max_new_tokens`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Normalization = Literal["strip", "lower", "whitespace", "punctuation"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ScoreSpec(_Section):
    """One scoring function of the registry and its arguments (a reward or a metric)."""

    name: str
    """A built-in (exact_match, contains, regex, format, json_valid, json_field_match,
    json_field_accuracy, rouge_l, bleu, chrf, length_penalty) or python:module:function for your
    own (called as fn(prompts, completions, **columns), returning one float or None per
    completion, higher is better; checked by import at plan time)."""
    column: str | None = None
    """Data column holding the reference answer (exact_match, contains, json_field_match,
    json_field_accuracy, rouge_l, bleu, chrf). null: the row's answer (the target of an
    evaluation; the `answer` column of GRPO data)."""
    pattern: str | None = None
    """Regular expression: regex searches for it, format requires the whole completion to match it."""
    field: str | None = None
    """JSON field compared with the reference column (json_field_match)."""
    fields: list[str] | None = None
    """JSON fields compared between the generated and the reference object
    (json_field_accuracy: the share of them that are equal); null: every field of the reference."""
    normalize: list[Normalization] = Field(default_factory=lambda: ["strip"])
    """Applied to generated and reference text before comparing (exact_match, contains,
    json_field_match, json_field_accuracy, rouge_l, bleu, chrf): strip (outer whitespace), lower
    (case), whitespace (runs of whitespace to one space), punctuation (removed)."""
    target_length: int | None = Field(default=None, ge=1)
    """length_penalty: completions longer than this many characters lose reward in proportion."""


class MetricSpec(ScoreSpec):
    """One metric of generation-based evaluation; a bare name stands for {name: NAME}."""


class EvalSettings(_Section):
    @field_validator("metrics", mode="before")
    @classmethod
    def _bare_names(cls, value: object) -> object:
        # eval.metrics=[exact_match, json_field_accuracy] on the command line gives names only.
        if isinstance(value, (list, tuple)):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    metrics: list[MetricSpec] = Field(default_factory=list)
    """Metrics of generated answers, computed at every evaluation (training.eval_interval_steps)
    on the first eval.generate_samples validation rows and logged as eval/<name> (metrics.jsonl,
    every tracker; a table of prompts, targets, predictions and scores in RUN_DIR/eval/step-N.jsonl).
    Names as in the reward registry: exact_match, contains, regex, format, json_valid,
    json_field_accuracy, json_field_match, rouge_l (rouge-score's F-measure), bleu and chrf
    (sacrebleu, corpus-level, divided by 100 so every metric runs from 0 to 1), length_penalty,
    or python:module:function. Options per metric, e.g.
    [{name: exact_match, normalize: [strip, lower]}, {name: json_field_accuracy, fields: [answer]}].
    Empty: evaluation computes loss and perplexity only."""
    generate_samples: int = Field(default=32, ge=1, le=100_000)
    """Validation rows answered by generation at each evaluation (the first N of the split, the
    same rows each time). Generation is the slow part of an evaluation: it grows with N × max_new_tokens."""
    max_new_tokens: int = Field(default=64, ge=1, le=32768)
    """Longest generated answer in tokens; generation also stops at the end-of-turn token."""
    batch_size: int = Field(default=8, ge=1, le=1024)
    """Prompts generated for together (left-padded)."""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """0: greedy decoding (the default: the same answers every time). Above 0: sampling, seeded
    with the run's seed at every evaluation, so a rerun gives the same answers."""
