"""Scoring functions: one registry for GRPO rewards and evaluation metrics (`eval.metrics`,
`peftstudio evaluate`).

A scorer scores each completion of a batch: `fn(prompts, completions, **columns)` returns one
float (or None: not applicable) per completion, the signature TRL's GRPOTrainer calls; higher is
better. Built-ins read a reference column of the data (`answer` for GRPO, the target for an
evaluation, unless `column` says otherwise); user code is named `python:module:function`. Text
similarity comes from kept libraries: rouge-score (ROUGE-L) and sacrebleu (BLEU, chrF, whose
0-100 scores are divided by 100 so every built-in runs from 0 to 1). `check_rewards` /
`check_metrics` find every problem of a list by reading the specs and importing user modules
(no model, no data, no step run), so `plan` reports them before anything loads. Completions
arrive as text or as chat messages; both are scored on their text.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from peftstudio.config.eval_schema import MetricSpec, ScoreSpec
from peftstudio.config.objective_schema import RewardSpec
from peftstudio.errors import Problem

DEFAULT_COLUMN = "answer"
# Where an evaluation puts each row's reference answer (the target of the chat / completion).
TARGET_COLUMN = "target"
# What each built-in needs besides the completion: a reference column, a pattern, a field.
NEEDS_COLUMN = ("exact_match", "contains", "json_field_match", "json_field_accuracy", "rouge_l", "bleu", "chrf")
NEEDS_PATTERN = ("regex", "format")
BUILTINS = ("exact_match", "contains", "regex", "format", "json_valid", "json_field_match", "json_field_accuracy",
            "rouge_l", "bleu", "chrf", "length_penalty")
PYTHON_PREFIX = "python:"
Score = Callable[..., list[float | None]]


def text_of(completion: Any) -> str:
    """A completion's text: a string as is, a chat completion's last message content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


_PUNCTUATION = re.compile(r"[^\w\s]")


def normalized(text: Any, steps: Sequence[str]) -> str:
    """`text` after the spec's normalize steps, in a fixed order (strip last, after the others)."""
    text = str(text)
    if "lower" in steps:
        text = text.lower()
    if "punctuation" in steps:
        text = _PUNCTUATION.sub("", text)
    if "whitespace" in steps:
        text = " ".join(text.split())
    return text.strip() if "strip" in steps else text


def _pairs(spec: ScoreSpec, column: str, completions, columns) -> list[tuple[str, str]]:
    """(completion, reference) texts, both normalized as the spec says."""
    return [(normalized(text_of(c), spec.normalize), normalized(ref, spec.normalize))
            for c, ref in zip(completions, columns[column])]


def _exact_match(spec: ScoreSpec, column: str) -> Score:
    def score(prompts, completions, **columns):
        return [float(c == ref) for c, ref in _pairs(spec, column, completions, columns)]
    return score


def _contains(spec: ScoreSpec, column: str) -> Score:
    def score(prompts, completions, **columns):
        return [float(ref in c) for c, ref in _pairs(spec, column, completions, columns)]
    return score


def _regex(spec: ScoreSpec, column: str) -> Score:
    pattern = re.compile(spec.pattern or "")

    def score(prompts, completions, **columns):
        return [float(pattern.search(text_of(c)) is not None) for c in completions]
    return score


def _format(spec: ScoreSpec, column: str) -> Score:
    pattern = re.compile(spec.pattern or "")

    def score(prompts, completions, **columns):
        return [float(pattern.fullmatch(text_of(c).strip()) is not None) for c in completions]
    return score


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def _json_valid(spec: ScoreSpec, column: str) -> Score:
    def score(prompts, completions, **columns):
        return [float(_parse_json(text_of(c).strip())[0]) for c in completions]
    return score


def _json_field_match(spec: ScoreSpec, column: str) -> Score:
    def score(prompts, completions, **columns):
        found = []
        for completion, ref in zip(completions, columns[column]):
            ok, value = _parse_json(text_of(completion).strip())
            found.append(float(ok and isinstance(value, dict) and normalized(value.get(spec.field), spec.normalize)
                               == normalized(ref, spec.normalize)))
        return found
    return score


def _json_field_accuracy(spec: ScoreSpec, column: str) -> Score:
    def same(generated: Any, reference: Any) -> bool:
        if isinstance(reference, str) and isinstance(generated, str):
            return normalized(generated, spec.normalize) == normalized(reference, spec.normalize)
        return generated == reference

    def one(completion: Any, ref: Any) -> float | None:
        ok, reference = _parse_json(str(ref).strip())
        if not ok or not isinstance(reference, dict):
            return None  # the reference is no JSON object: not applicable (plan checks the data)
        names = spec.fields or list(reference)
        ok, generated = _parse_json(text_of(completion).strip())
        if not ok or not isinstance(generated, dict) or not names:
            return 0.0
        return sum(name in generated and same(generated[name], reference.get(name)) for name in names) / len(names)

    def score(prompts, completions, **columns):
        return [one(c, ref) for c, ref in zip(completions, columns[column])]
    return score


def _rouge_l(spec: ScoreSpec, column: str) -> Score:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def score(prompts, completions, **columns):
        return [scorer.score(ref, c)["rougeL"].fmeasure for c, ref in _pairs(spec, column, completions, columns)]
    return score


def _sacrebleu(sentence_name: str) -> Callable[[ScoreSpec, str], Score]:
    def factory(spec: ScoreSpec, column: str) -> Score:
        import sacrebleu

        sentence = getattr(sacrebleu, sentence_name)
        options = {"use_effective_order": True} if sentence_name == "sentence_bleu" else {}

        def score(prompts, completions, **columns):
            return [sentence(c, [ref], **options).score / 100 for c, ref in _pairs(spec, column, completions, columns)]
        return score
    return factory


def _length_penalty(spec: ScoreSpec, column: str) -> Score:
    target = spec.target_length or 1

    def score(prompts, completions, **columns):
        # 0 up to the target, then -1 per target-length of excess: a gentle push, never a cliff.
        return [-max(len(text_of(c)) - target, 0) / target for c in completions]
    return score


FACTORIES = {"exact_match": _exact_match, "contains": _contains, "regex": _regex, "format": _format,
             "json_valid": _json_valid, "json_field_match": _json_field_match,
             "json_field_accuracy": _json_field_accuracy, "rouge_l": _rouge_l,
             "bleu": _sacrebleu("sentence_bleu"), "chrf": _sacrebleu("sentence_chrf"), "length_penalty": _length_penalty}


def corpus_score(spec: ScoreSpec, completions: Sequence[str], references: Sequence[str]) -> float | None:
    """BLEU and chrF of a whole evaluation as sacrebleu defines them (corpus-level, not the mean of
    sentence scores), divided by 100; None for the other scorers (their value is the mean)."""
    if spec.name not in ("bleu", "chrf"):
        return None
    import sacrebleu

    hypotheses = [normalized(c, spec.normalize) for c in completions]
    refs = [[normalized(r, spec.normalize) for r in references]]
    corpus = sacrebleu.corpus_bleu if spec.name == "bleu" else sacrebleu.corpus_chrf
    return corpus(hypotheses, refs).score / 100


@dataclass(frozen=True)
class Reward:
    label: str  # how metrics name it: rewards/<label>/mean
    weight: float
    function: Callable[..., list[float | None]]


def reward_label(spec: ScoreSpec, index: int, specs: Sequence[ScoreSpec]) -> str:
    """A metric-safe name, unique in the list (exact_match, exact_match_2, ...)."""
    base = spec.name.rsplit(":", 1)[-1] if spec.name.startswith(PYTHON_PREFIX) else spec.name
    same = [i for i, other in enumerate(specs) if other.name == spec.name]
    return base if len(same) == 1 else f"{base}_{same.index(index) + 1}"


def build_rewards(specs: Sequence[RewardSpec]) -> list[Reward]:
    """The callables TRL calls, each named by its label (TRL logs rewards/<__name__>/mean)."""
    rewards = []
    for index, spec in enumerate(specs):
        inner = scorer(spec, DEFAULT_COLUMN)

        def call(prompts, completions, _inner=inner, **columns):
            return _inner(prompts, completions, **columns)
        call.__name__ = reward_label(spec, index, specs)
        rewards.append(Reward(call.__name__, spec.weight, call))
    return rewards


def scorer(spec: ScoreSpec, default_column: str) -> Score:
    """The scoring function a checked spec names; built-ins read `spec.column` or `default_column`."""
    if spec.name.startswith(PYTHON_PREFIX):
        function = _load_user_function(spec.name)[0]
        if function is None:  # check_rewards / check_metrics refuse such a spec before anything is built
            raise RuntimeError(f"{spec.name} was not checked before use")
        return function
    return FACTORIES[spec.name](spec, spec.column or default_column)


@dataclass(frozen=True)
class Metric:
    """An evaluation metric: its name in metrics.jsonl (eval/<label>), the per-row scorer, and
    the spec (for corpus-level scores)."""

    label: str
    spec: MetricSpec
    function: Score

    @property
    def key(self) -> str:
        return f"eval/{self.label}"


def build_metrics(specs: Sequence[MetricSpec]) -> list[Metric]:
    """The metrics of eval.metrics (or `evaluate --metrics`), reading the target unless `column` says otherwise."""
    return [Metric(reward_label(spec, index, specs), spec, scorer(spec, TARGET_COLUMN)) for index, spec in enumerate(specs)]


def metric_keys(specs: Sequence[MetricSpec]) -> list[str]:
    """The names the metrics are logged under: eval/exact_match, eval/json_field_accuracy, ..."""
    return [f"eval/{reward_label(spec, index, specs)}" for index, spec in enumerate(specs)]


def check_metrics(specs: Sequence[MetricSpec], where: str = "eval.metrics") -> list[Problem]:
    """Every problem of a metric list, found without generating anything."""
    return [problem for index, spec in enumerate(specs) if (problem := _spec_problem(spec, f"{where}[{index}]"))]


def reward_columns(specs: Sequence[RewardSpec]) -> dict[str, str]:
    """Data columns the rewards read → the reward key that names it (for data checks)."""
    found: dict[str, str] = {}
    for index, spec in enumerate(specs):
        if spec.name in NEEDS_COLUMN:
            found.setdefault(spec.column or DEFAULT_COLUMN, f"grpo.rewards[{index}]")
    return found


def check_rewards(specs: Sequence[RewardSpec]) -> list[Problem]:
    """Every problem of the reward list, found without running a reward."""
    if not specs:
        return [Problem("grpo.rewards", "no reward function: GRPO has nothing to learn from",
                        "add one, e.g. grpo.rewards=[{name: exact_match, column: answer}]")]
    problems = []
    for index, spec in enumerate(specs):
        problem = _spec_problem(spec, f"grpo.rewards[{index}]")
        if problem:
            problems.append(problem)
    return problems


def arguments_of(name: str) -> list[str]:
    """The ScoreSpec keys a built-in reads besides its weight (what the studio's reward editor
    offers); column is optional (default: the answer column), the others are required."""
    extra = {"json_field_match": ["field"], "json_field_accuracy": ["fields"], "length_penalty": ["target_length"]}
    return (["column"] if name in NEEDS_COLUMN else []) + (["pattern"] if name in NEEDS_PATTERN else []) + extra.get(name, [])


def _spec_problem(spec: ScoreSpec, where: str) -> Problem | None:
    if spec.name.startswith(PYTHON_PREFIX):
        return _load_user_function(spec.name, where)[1]
    if spec.name not in BUILTINS:
        kind = "reward" if isinstance(spec, RewardSpec) else "metric"
        close = difflib.get_close_matches(spec.name, BUILTINS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return Problem(f"{where}.name", f"unknown {kind} {spec.name!r}",
                       f"{hint}use one of {', '.join(BUILTINS)}, or python:module:function for your own")
    if spec.name in NEEDS_PATTERN:
        if not spec.pattern:
            return Problem(f"{where}.pattern", f"reward {spec.name} needs a pattern", f"set {where}.pattern='<regex>'")
        try:
            re.compile(spec.pattern)
        except re.error as error:
            return Problem(f"{where}.pattern", f"{spec.pattern!r} is no regular expression: {error}", "fix the pattern")
    if spec.name == "json_field_accuracy" and spec.fields is not None and not spec.fields:
        return Problem(f"{where}.fields", "json_field_accuracy with an empty field list compares nothing",
                       f"name the fields, e.g. {where}.fields=[answer], or leave it null for every field of the reference")
    if spec.name == "json_field_match" and not spec.field:
        return Problem(f"{where}.field", "json_field_match needs the JSON field to compare", f"set {where}.field=<name>")
    if spec.name == "length_penalty" and spec.target_length is None:
        return Problem(f"{where}.target_length", "length_penalty needs a target length in characters",
                       f"set {where}.target_length=200")
    return None


def _load_user_function(name: str, where: str = "grpo.rewards") -> tuple[Callable | None, Problem | None]:
    """Import python:module:function and check it can be called as fn(prompts, completions, **columns)."""
    target = name[len(PYTHON_PREFIX):]
    module_name, _, function_name = target.rpartition(":")
    fix = "write python:package.module:function (the module importable from the working directory or PYTHONPATH)"
    if not module_name or not function_name:
        return None, Problem(f"{where}.name", f"{name!r} does not name a module and a function", fix)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure of user code is the user's to fix
        return None, Problem(f"{where}.name", f"cannot import {module_name!r}: {type(error).__name__}: {error}", fix)
    function = getattr(module, function_name, None)
    if not callable(function):
        return None, Problem(f"{where}.name", f"module {module_name!r} has no function {function_name!r}", fix)
    problem = _signature_problem(function)
    return (None, Problem(f"{where}.name", f"{name}: {problem}", "define it as def "
                          f"{function_name}(prompts, completions, **kwargs) -> list[float]")) if problem else (function, None)


def _signature_problem(function: Callable) -> str | None:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return "its signature cannot be read"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    has_var_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
    if names[:2] != ["prompts", "completions"]:
        return f"the first two parameters must be prompts and completions, found {names[:2] or 'none'}"
    required_extra = [p.name for p in positional[2:] if p.default is p.empty]
    if required_extra:
        return f"parameters {required_extra} have no default; data columns arrive as keyword arguments"
    if not has_var_keyword:
        return "it takes no **kwargs; TRL passes every data column (and trainer_state) as keyword arguments"
    return None


def score_predictions(metrics: Sequence[Metric], prompts: Sequence[Any], predictions: Sequence[str],
                      targets: Sequence[str], columns: dict[str, Sequence[Any]] | None = None,
                      ) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """(eval/<label> → value, per-row {label: score}) of `predictions` against `targets`.

    A value is the mean of the rows a metric applies to (None when it applies to none), except
    BLEU and chrF, which are corpus-level as sacrebleu defines them. `columns` are the rows'
    other data columns (for metrics that name one, and for python: metrics)."""
    data = {**(columns or {}), TARGET_COLUMN: list(targets)}
    totals: dict[str, float | None] = {}
    rows: list[dict[str, float | None]] = [{} for _ in predictions]
    for metric in metrics:
        scores = [None if s is None else float(s) for s in metric.function(list(prompts), list(predictions), **data)]
        for row, value in zip(rows, scores):
            row[metric.label] = value
        applicable = [s for s in scores if s is not None]
        corpus = corpus_score(metric.spec, predictions, data[metric.spec.column or TARGET_COLUMN])
        totals[metric.key] = corpus if corpus is not None else (sum(applicable) / len(applicable) if applicable else None)
    return totals, rows


# Metrics that `training.metric_for_best_model` may name beside eval.metrics, and their direction.
LOSS_METRICS = {"loss": "eval_loss", "eval_loss": "eval_loss", "perplexity": "eval_perplexity",
                "eval_perplexity": "eval_perplexity"}


def best_metric_key(name: str, specs: Sequence[MetricSpec]) -> str | None:
    """The logged key `training.metric_for_best_model` names (eval_loss, eval/exact_match, ...):
    a loss metric, or one of eval.metrics with or without its eval/ prefix; None: none of them."""
    if name in LOSS_METRICS:
        return LOSS_METRICS[name]
    keys = metric_keys(specs)
    for candidate in (name, "eval/" + name.removeprefix("eval_")):
        if candidate in keys:
            return candidate
    return None


def higher_is_better(key: str) -> bool:
    """Loss and perplexity improve downward; every eval.metrics score (built-in or python:) upward."""
    return key.startswith("eval/")
