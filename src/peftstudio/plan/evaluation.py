"""Checks and plan notes of generation-based evaluation (eval.*) and of the metric that picks
the best checkpoint (training.metric_for_best_model): all found before any model loads."""

from __future__ import annotations

from peftstudio.config.schema import RunConfig
from peftstudio.data.eval_examples import eval_examples
from peftstudio.data.prepare import PreparedData
from peftstudio.errors import Problem
from peftstudio.rewards import best_metric_key, check_metrics, higher_is_better, metric_keys

# How many validation rows the JSON-reference check reads: enough to catch a wrong column.
CHECKED_ROWS = 200


def eval_problems(config: RunConfig, validation_rows: int) -> list[Problem]:
    """eval.metrics specs (python: ones imported and their signature read), what they need of
    the run, and training.metric_for_best_model against what the run logs."""
    problems = check_metrics(config.eval.metrics)
    if config.eval.metrics and config.objective != "sft":
        problems.append(Problem("eval.metrics", f"generation-based evaluation runs with objective=sft; this run is "
                                f"objective={config.objective}", "set eval.metrics=[] (GRPO scores its completions "
                                "with grpo.rewards), or evaluate the finished run with `peftstudio evaluate RUN_DIR`"))
    if config.eval.metrics and validation_rows == 0:
        problems.append(Problem("eval.metrics", "needs validation rows to generate answers for, but there is no "
                                "validation split", "set data.validation_split above 0 (or data.validation_path)"))
    name = config.training.metric_for_best_model
    if name is not None and best_metric_key(name, config.eval.metrics) is None:
        known = ["eval_loss", "eval_perplexity", *metric_keys(config.eval.metrics)]
        fix = f"use one of {', '.join(known)}" + ("" if config.eval.metrics else
                                                  ", or add the metric to eval.metrics (e.g. eval.metrics=[exact_match])")
        problems.append(Problem("training.metric_for_best_model", f"{name!r} is not a metric this run computes", fix))
    return problems


def eval_data_problems(config: RunConfig, data: PreparedData) -> list[Problem]:
    """What eval.metrics needs of the validation rows: answers to compare with (and JSON ones for
    json_field_accuracy on the target)."""
    if not config.eval.metrics or not data.validation_rows:
        return []
    if data.modality != "text":
        return [Problem("eval.metrics", "generation-based evaluation of image-text runs is not supported",
                        "set eval.metrics=[]")]
    examples = eval_examples(data.validation_rows, CHECKED_ROWS)
    if not examples:
        return [Problem("eval.metrics", f"the validation rows ({data.format} format) have no answer to compare "
                        "generations with", "use instruction, prompt_completion or chat data, or set eval.metrics=[]")]
    json_fields = [i for i, spec in enumerate(config.eval.metrics) if spec.name == "json_field_accuracy" and not spec.column]
    if json_fields:
        return _json_target_problems(examples, data, json_fields[0])
    return []


def _json_target_problems(examples, data: PreparedData, index: int) -> list[Problem]:
    import json

    for position, example in enumerate(examples):
        try:
            value = json.loads(example.target)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            where = data.validation_where[position] if position < len(data.validation_where) else "validation row"
            shown = example.target if len(example.target) <= 60 else example.target[:59] + "…"
            return [Problem(f"eval.metrics[{index}]", f"json_field_accuracy compares JSON objects, but the answer at "
                            f"{where} is not one: {shown!r}", "answer with JSON objects, or use exact_match / "
                            "json_valid for this data")]
    return []


def eval_notes(config: RunConfig) -> list[str]:
    """What `plan` says about evaluation by generation and the best checkpoint."""
    notes = []
    settings = config.eval
    if settings.metrics:
        decoding = "greedy" if settings.temperature == 0 else f"sampled at temperature {settings.temperature:g}, seed {config.seed}"
        notes.append(f"{', '.join(metric_keys(settings.metrics))} on the first {settings.generate_samples} validation rows "
                     f"at every evaluation ({decoding}, at most {settings.max_new_tokens} new tokens); predictions in "
                     f"{config.training.output_dir}/eval/step-N.jsonl")
    name = config.training.metric_for_best_model
    key = best_metric_key(name, settings.metrics) if name else None
    if key:
        direction = "higher is better" if higher_is_better(key) else "lower is better"
        notes.append(f"best checkpoint by {key} ({direction}), kept beyond training.save_total_limit")
    return notes
