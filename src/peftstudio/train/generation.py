"""Generation-based evaluation: answer validation prompts with the model being trained (or a
finished run's), score the answers with the metric registry (peftstudio.rewards), and keep a
predictions table per evaluation (RUN_DIR/eval/step-N.jsonl).

Greedy by default, so the same adapter gives the same answers; with eval.temperature > 0 the
sampling is seeded with the run's seed at every evaluation. Prompts are generated in
left-padded batches of eval.batch_size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.config.eval_schema import EvalSettings
from peftstudio.data.eval_examples import EvalExample
from peftstudio.data.templates import stop_token_ids
from peftstudio.files import write_text
from peftstudio.rewards import Metric, build_metrics, score_predictions

log = logging.getLogger("peftstudio")


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    batch_size: int = 8
    temperature: float = 0.0
    seed: int = 0

    @classmethod
    def of(cls, settings: EvalSettings, seed: int) -> "Decoding":
        return cls(settings.max_new_tokens, settings.batch_size, settings.temperature, seed)


def prompt_token_ids(tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt as the model saw it in training: the chat template with the generation prompt
    (plain text of the last turn when the tokenizer has no template)."""
    if tokenizer.chat_template:
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    return list(tokenizer(str(messages[-1]["content"]))["input_ids"])


def generate_answers(model, tokenizer, examples: list[EvalExample], decoding: Decoding) -> list[str]:
    """One decoded answer per example (special tokens dropped, outer whitespace stripped)."""
    import torch

    was_training = model.training
    model.eval()
    stops = stop_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    answers: list[str] = []
    if decoding.temperature > 0:
        torch.manual_seed(decoding.seed)
    try:
        for start in range(0, len(examples), decoding.batch_size):
            prompts = [prompt_token_ids(tokenizer, e.messages) for e in examples[start:start + decoding.batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
            sampling = {"do_sample": True, "temperature": decoding.temperature} if decoding.temperature > 0 else {
                "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            with torch.no_grad():
                output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=decoding.max_new_tokens,
                                        eos_token_id=stops, pad_token_id=pad, **sampling)
            answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]
    finally:
        model.train(was_training)
    return answers


@dataclass(frozen=True)
class ScoredPredictions:
    values: dict[str, float | None]  # eval/<label> → value
    rows: list[dict[str, Any]]  # prompt, target, prediction, scores


def score_examples(metrics: list[Metric], examples: list[EvalExample], predictions: list[str]) -> ScoredPredictions:
    """The metrics of `predictions` and the predictions table."""
    columns = {key: [e.columns.get(key) for e in examples] for key in {k for e in examples for k in e.columns}}
    values, scores = score_predictions(metrics, [e.messages for e in examples], predictions,
                                       [e.target for e in examples], columns)
    rows = [{"prompt": e.prompt, "target": e.target, "prediction": p, "scores": s}
            for e, p, s in zip(examples, predictions, scores)]
    return ScoredPredictions(values, rows)


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    """The predictions table as JSON Lines (written whole, atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class GenerationEvaluator:
    """What MetricsCallback calls at each evaluation: generate, score, write RUN_DIR/eval/step-N.jsonl."""

    def __init__(self, settings: EvalSettings, examples: list[EvalExample], seed: int, table_dir: Path | None):
        self.metrics = build_metrics(settings.metrics)
        self.examples = examples
        self.decoding = Decoding.of(settings, seed)
        self.table_dir = table_dir  # None in the workers of a multi-process run: rank 0 writes
        self.last_rows: list[dict[str, Any]] = []  # the latest predictions table, for trackers that record it

    def __call__(self, model, tokenizer, step: int) -> dict[str, float | None]:
        predictions = generate_answers(model, tokenizer, self.examples, self.decoding)
        scored = score_examples(self.metrics, self.examples, predictions)
        self.last_rows = scored.rows
        if self.table_dir is not None:
            write_predictions(self.table_dir / f"step-{step}.jsonl", scored.rows)
        log.info("step %d generation eval on %d rows: %s", step, len(self.examples),
                 ", ".join(f"{k}={v:.4f}" if v is not None else f"{k}=n/a" for k, v in scored.values.items()))
        return scored.values
