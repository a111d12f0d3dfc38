"""Generation-based evaluation on the bundled JSON task (embedded:sample-json): one short
tiny-model run shared by the tests; the exact-match curve rises, the best checkpoint by
eval/exact_match is kept, `evaluate --compare-base` puts the adapter above the base, and
lm-evaluation-harness runs a local task definition on the adapter. (A bad metric spec is refused
in tests/unit/test_eval_metrics.py, before any training.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from peftstudio import api
from peftstudio.report import print_evaluation
from peftstudio.track.metrics import read_metrics

STEPS, EVERY = 120, 40


@pytest.fixture(scope="module")
def json_run(model_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-run")
    api.train(["data.path=embedded:sample-json", "data.validation_split=0.05", f"training.num_batches={STEPS}",
               f"training.eval_interval_steps={EVERY}", "training.save_interval_steps=1000",
               "training.save_total_limit=1", f"training.output_dir={root / 'run'}",
               f"training.checkpoint_dir={root / 'checkpoints'}", "eval.metrics=[exact_match, json_field_accuracy]",
               "training.metric_for_best_model=eval/exact_match", "eval.generate_samples=16",
               "eval.max_new_tokens=40", "eval.batch_size=16"], console=Console(quiet=True))
    return root


def evaluations(run: Path) -> list[dict]:
    return [r for r in read_metrics(run / "run" / "metrics.jsonl") if "eval/exact_match" in r]


def test_exact_match_rises_and_the_best_checkpoint_is_kept(json_run):
    curve = evaluations(json_run)
    assert [r["step"] for r in curve] == list(range(EVERY, STEPS + 1, EVERY))
    exact = [r["eval/exact_match"] for r in curve]
    # Measured on this machine (CPU, seed 42): exact match 0 → 0.125 → 0.125 of 16 rows, JSON-field
    # accuracy 0.09 → 0.38 → 0.56. The tiny model learns the JSON shape long before the answers.
    assert exact[-1] > exact[0], exact
    assert curve[-1]["eval/json_field_accuracy"] > curve[0]["eval/json_field_accuracy"]
    summary = json.loads((json_run / "run" / "summary.json").read_text())
    best_step = curve[exact.index(max(exact))]["step"]  # the first evaluation that reached the maximum
    assert summary["metric_for_best_model"] == "eval/exact_match" and summary["best_step"] == best_step
    assert summary["best_metric"] == max(exact)
    # save_total_limit=1 keeps the final checkpoint, and the best one beside it.
    kept = sorted(int(p.name.split("-")[1]) for p in (json_run / "checkpoints").glob("checkpoint-*"))
    assert kept == sorted({best_step, STEPS}), kept
    for record in curve:  # one predictions table per evaluation, its scores averaging to the logged value
        rows = [json.loads(line) for line in (json_run / "run" / "eval" / f"step-{record['step']}.jsonl").open()]
        assert len(rows) == 16 and set(rows[0]) == {"prompt", "target", "prediction", "scores"}
        assert sum(r["scores"]["exact_match"] for r in rows) / 16 == pytest.approx(record["eval/exact_match"])


def test_evaluate_compare_base_puts_the_adapter_above_the_base(json_run):
    result = api.evaluate(json_run / "run", compare_base=True, limit=16)
    assert result.metrics == ["eval/exact_match", "eval/json_field_accuracy"] and result.rows == 16
    assert result.adapter["eval/exact_match"] > result.base["eval/exact_match"]
    assert result.adapter["eval/json_field_accuracy"] > result.base["eval/json_field_accuracy"]
    saved = json.loads((json_run / "run" / "eval" / "evaluate.json").read_text())
    assert saved["adapter"] == result.adapter and saved["base"] == result.base
    console = Console(record=True, width=120)
    print_evaluation(console, result)
    table = console.export_text()
    assert "base" in table and "adapter" in table and f"{result.adapter['eval/exact_match']:.4f}" in table


def test_lm_eval_runs_a_local_task_on_the_adapter(json_run, tmp_path):
    rows = [{"question": f"What is the capital of {country}?", "choices": ["Paris", "Rome", "Oslo"], "label": label}
            for country, label in (("France", 0), ("Italy", 1), ("Norway", 2))]
    (tmp_path / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "capitals.yaml").write_text(
        "task: local_capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'capitals.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    result = api.evaluate(json_run / "run", limit=2, lm_eval_tasks=["local_capitals"], lm_eval_include=tmp_path)
    accuracy = result.lm_eval["local_capitals"]["acc"]
    assert 0.0 <= accuracy <= 1.0 and set(result.lm_eval["local_capitals"]) == {"acc"}
