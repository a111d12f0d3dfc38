"""`peftstudio evaluate RUN_DIR`: the eval.metrics registry on any dataset after training, the
adapter next to the base model (the same weights with the adapter disabled), and optionally
lm-evaluation-harness tasks on the adapter.

Metric specs and data are checked before the model loads (user errors, exit 2). Results go to
RUN_DIR/eval/evaluate.json and the predictions table RUN_DIR/eval/evaluate.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftstudio.config.eval_schema import MetricSpec
from peftstudio.config.schema import RunConfig
from peftstudio.data.eval_examples import EvalExample, eval_examples
from peftstudio.errors import Problem, UserError
from peftstudio.files import write_json
from peftstudio.rewards import build_metrics, check_metrics

RESULT_FILE = "evaluate.json"
PREDICTIONS_FILE = "evaluate.jsonl"


@dataclass
class Evaluation:
    run_dir: str
    data: str
    rows: int
    metrics: list[str]
    adapter: dict[str, float | None]
    base: dict[str, float | None] | None = None
    predictions: str = ""
    lm_eval: dict[str, Any] | None = None
    decoding: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def metric_specs(names: list[str] | None, config: RunConfig) -> list[MetricSpec]:
    """--metrics names (each with the options the run's eval.metrics gave it), else the run's
    eval.metrics, else exact_match; a user error for an unknown or broken one."""
    configured = {spec.name: spec for spec in config.eval.metrics}
    specs = [configured.get(name) or MetricSpec(name=name) for name in names] if names else (
        list(config.eval.metrics) or [MetricSpec(name="exact_match")])
    problems = check_metrics(specs, where="--metrics")
    if problems:
        raise UserError(problems, headline="the metrics cannot be computed")
    return specs


def examples_of(config: RunConfig, data_file: Path | None, limit: int | None) -> tuple[str, list[EvalExample]]:
    """(where the rows come from, the rows with answers): all of `data_file` (read as the run's
    data settings say: format, columns), or the run's own validation split."""
    from peftstudio.data.prepare import prepare_data

    if data_file is not None:
        if not data_file.exists():
            raise UserError(Problem("--data", f"{data_file} does not exist", "pass a JSONL / JSON / CSV / Parquet file"))
        settings = config.data.model_copy(update={"path": str(data_file), "validation_split": 0.0,
                                                  "validation_path": None, "datasets": [], "max_samples": None})
        source, rows = str(data_file), prepare_data(settings).train_rows
    else:
        source, rows = f"{config.data.path} (the run's validation split)", prepare_data(config.data).validation_rows
    examples = eval_examples(rows, limit)
    if not examples:
        raise UserError(Problem("--data", f"{source} has no rows with an answer to compare generations with",
                                "pass instruction, prompt_completion or chat data with --data"))
    return source, examples


def evaluate_run(run_dir: Path, data_file: Path | None = None, metric_names: list[str] | None = None,
                 compare_base: bool = False, limit: int | None = None, max_new_tokens: int | None = None,
                 lm_eval_tasks: list[str] | None = None, lm_eval_include: Path | None = None,
                 lm_eval_limit: int | None = None) -> Evaluation:
    """Score a finished run's generations (greedy, as during training) with the metric registry."""
    from peftstudio.export.infer import finished_run, load_run_model
    from peftstudio.train.generation import Decoding, generate_answers, score_examples, write_predictions

    paths, config = finished_run(run_dir)
    specs = metric_specs(metric_names, config)
    if lm_eval_tasks:
        _require_lm_eval(lm_eval_include)
    source, examples = examples_of(config, data_file, limit)
    metrics = build_metrics(specs)
    decoding = Decoding.of(config.eval, config.seed)
    if max_new_tokens is not None:
        decoding = Decoding(max_new_tokens, decoding.batch_size, decoding.temperature, decoding.seed)
    model, tokenizer, _ = load_run_model(run_dir)
    tuned = score_examples(metrics, examples, generate_answers(model, tokenizer, examples, decoding))
    base = None
    if compare_base:
        with model.disable_adapter():
            base = score_examples(metrics, examples, generate_answers(model, tokenizer, examples, decoding))
    table = paths.root / "eval" / PREDICTIONS_FILE
    write_predictions(table, _table_rows(tuned.rows, base.rows if base else None))
    result = Evaluation(str(paths.root), source, len(examples), [m.key for m in metrics], tuned.values,
                        base.values if base else None, str(table), decoding=decoding.__dict__)
    if lm_eval_tasks:
        result.lm_eval = run_lm_eval(model, tokenizer, lm_eval_tasks, lm_eval_include, lm_eval_limit)
    write_json(paths.root / "eval" / RESULT_FILE, result.to_dict())
    return result


def _table_rows(tuned: list[dict], base: list[dict] | None) -> list[dict]:
    if base is None:
        return tuned
    return [{**row, "base_prediction": other["prediction"], "base_scores": other["scores"]} for row, other in zip(tuned, base)]


def _require_lm_eval(include: Path | None) -> None:
    import importlib.util

    from peftstudio.errors import EnvironmentProblem

    if importlib.util.find_spec("lm_eval") is None:
        raise EnvironmentProblem(Problem("--lm-eval", "lm-evaluation-harness is not installed",
                                         "pip install lm_eval==0.4.13"))
    if include is not None and not include.is_dir():
        raise UserError(Problem("--lm-eval-include", f"{include} is not a directory",
                                "pass the folder holding your task YAML files"))


def run_lm_eval(model, tokenizer, tasks: list[str], include: Path | None, limit: int | None) -> dict[str, Any]:
    """lm-evaluation-harness on the loaded adapter model: {task: {metric: value}} (stderr dropped).
    `include` adds a folder of local task YAML files (offline tasks on local data)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include) if include else None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise UserError(Problem("--lm-eval", f"unknown lm-eval task(s) {', '.join(unknown)}",
                                "name tasks lm-eval knows, or pass --lm-eval-include DIR with their YAML definitions"))
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    output = lm_eval.simple_evaluate(model=harness, tasks=tasks, task_manager=manager, limit=limit,
                                     log_samples=False, bootstrap_iters=0)
    # lm-eval names each number "metric,filter" (acc,none); stderr is off (bootstrap_iters=0).
    return {task: {name.split(",")[0]: value for name, value in values.items()
                   if "," in name and "stderr" not in name and isinstance(value, (int, float))}
            for task, values in output["results"].items()}
