"""The metric registry (peftstudio.rewards) against scores worked out by hand, and the checks
that refuse a bad eval.metrics spec before any model loads."""

import json
import math
import sys

import pytest

from peftstudio.config.eval_schema import EvalSettings, MetricSpec
from peftstudio.config.objective_schema import RewardSpec
from peftstudio.data.eval_examples import eval_example
from peftstudio.rewards import (best_metric_key, build_metrics, build_rewards, check_metrics, higher_is_better,
                                score_predictions)


def scores(spec: MetricSpec, predictions, targets):
    metrics = build_metrics([spec])
    return score_predictions(metrics, [""] * len(predictions), predictions, targets)


def test_exact_match_and_contains_with_normalisation():
    total, rows = scores(MetricSpec(name="exact_match"), [" Rome ", "rome", "Paris"], ["Rome", "Rome", "Rome"])
    assert [r["exact_match"] for r in rows] == [1.0, 0.0, 0.0] and total["eval/exact_match"] == pytest.approx(1 / 3)
    loose = MetricSpec(name="exact_match", normalize=["strip", "lower", "punctuation", "whitespace"])
    assert scores(loose, ["rome!", "New   york."], ["Rome", "new york"])[0]["eval/exact_match"] == 1.0
    assert [r["contains"] for r in scores(MetricSpec(name="contains"), ["It is Rome.", "Paris"], ["Rome", "Rome"])[1]] == [1.0, 0.0]


def test_json_field_accuracy_counts_equal_fields():
    target = '{"task": "capital", "answer": "Rome"}'
    spec = MetricSpec(name="json_field_accuracy")
    total, rows = scores(spec, ['{"task": "capital", "answer": "Rome"}', '{"task": "capital", "answer": "Oslo"}',
                                "not json", '{"answer": "Rome"}'], [target] * 4)
    assert [r["json_field_accuracy"] for r in rows] == [1.0, 0.5, 0.0, 0.5]
    assert total["eval/json_field_accuracy"] == pytest.approx(0.5)
    only_answer = MetricSpec(name="json_field_accuracy", fields=["answer"], normalize=["strip", "lower"])
    assert scores(only_answer, ['{"task": "x", "answer": "ROME"}'], [target])[0]["eval/json_field_accuracy"] == 1.0
    # A reference that is no JSON object: not applicable, so no value rather than a false 0.
    assert scores(spec, ['{"a": 1}'], ["plain"])[0]["eval/json_field_accuracy"] is None


def test_text_similarity_metrics_match_hand_computed_scores():
    # ROUGE-L: LCS 5 of a 5-token prediction and a 6-token reference: P=1, R=5/6, F=10/11.
    rouge = scores(MetricSpec(name="rouge_l"), ["the cat on the mat"], ["the cat sat on the mat"])[0]["eval/rouge_l"]
    assert rouge == pytest.approx(10 / 11)
    # BLEU: every n-gram precision is 1, the brevity penalty is exp(1 - 5/4).
    bleu = scores(MetricSpec(name="bleu"), ["a b c d"], ["a b c d e"])[0]["eval/bleu"]
    assert bleu == pytest.approx(math.exp(-0.25), abs=1e-4)
    for name in ("bleu", "chrf", "rouge_l"):
        total, rows = scores(MetricSpec(name=name), ["same words here", "zzz"], ["same words here", "qqq"])
        assert rows[0][name] == pytest.approx(1.0) and rows[1][name] == pytest.approx(0.0)
    assert 0.0 < scores(MetricSpec(name="chrf"), ["the cat"], ["the cats"])[0]["eval/chrf"] < 1.0


def test_one_registry_serves_rewards_and_metrics():
    reward = build_rewards([RewardSpec(name="rouge_l")])[0]
    assert reward.function(["p"], ["the cat on the mat"], answer=["the cat sat on the mat"]) == [pytest.approx(10 / 11)]
    metric = build_metrics([MetricSpec(name="rouge_l")])[0]
    assert metric.key == "eval/rouge_l" and metric.function(["p"], ["the cat on the mat"], target=["the cat sat on the mat"]) == [pytest.approx(10 / 11)]


def test_python_metric_is_checked_by_import_and_signature(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(
        "def length_ok(prompts, completions, **kwargs):\n    return [float(len(c) < 10) for c in completions]\n"
        "def wrong(completions):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_metrics", raising=False)
    assert check_metrics([MetricSpec(name="python:my_metrics:length_ok")]) == []
    total, _ = scores(MetricSpec(name="python:my_metrics:length_ok"), ["short", "much longer answer"], ["", ""])
    assert total == {"eval/length_ok": 0.5}
    problems = check_metrics([MetricSpec(name="python:my_metrics:wrong"), MetricSpec(name="python:nope_mod:f"),
                              MetricSpec(name="exact_mach"), MetricSpec(name="regex")])
    assert [p.where for p in problems] == ["eval.metrics[0].name", "eval.metrics[1].name", "eval.metrics[2].name",
                                         "eval.metrics[3].pattern"]
    assert "prompts and completions" in problems[0].message and "did you mean exact_match" in problems[2].fix


def test_bare_metric_names_and_the_best_metric_direction():
    settings = EvalSettings(metrics=["exact_match", {"name": "json_field_accuracy", "fields": ["answer"]}])
    assert [m.name for m in settings.metrics] == ["exact_match", "json_field_accuracy"]
    assert best_metric_key("eval/exact_match", settings.metrics) == "eval/exact_match"
    assert best_metric_key("exact_match", settings.metrics) == "eval/exact_match"
    assert best_metric_key("loss", settings.metrics) == "eval_loss"
    assert best_metric_key("eval/bleu", settings.metrics) is None
    assert higher_is_better("eval/exact_match") and not higher_is_better("eval_loss")


def test_validation_rows_become_prompt_and_target():
    row = {"prompt": [{"role": "user", "content": "Capital of Italy?"}],
           "completion": [{"role": "assistant", "content": "Rome"}]}
    example = eval_example(row)
    assert example.prompt == "Capital of Italy?" and example.target == "Rome"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    assert eval_example(chat).prompt == "2+2?" and eval_example(chat).target == "4" and len(eval_example(chat).messages) == 3
    assert eval_example({"text": "plain"}) is None


def test_the_job_page_lists_and_serves_each_predictions_table(tmp_path, model_cache):
    from tests.unit.test_studio_api import TINY, make_client

    with make_client(tmp_path / "studio") as client:
        job = client.post("/api/jobs", json={"state": TINY}).json()["id"]
        tables = client.app.state.studio.jobs.job_dir(job) / "outputs" / "eval"
        tables.mkdir(parents=True)
        row = {"prompt": "Capital of Italy?", "target": "Rome", "prediction": "Rome", "scores": {"exact_match": 1.0}}
        for step in (10, 2):
            (tables / f"step-{step}.jsonl").write_text(json.dumps(row) + "\n")
        assert client.get(f"/api/jobs/{job}").json()["evaluations"] == [2, 10]
        assert client.get(f"/api/jobs/{job}/evaluations/10").json() == {"step": 10, "rows": [row]}
        assert client.get(f"/api/jobs/{job}/evaluations/3").status_code == 404
        page = client.get("/static/job.js").text
        assert "/evaluations/" in page and "predictions" in page
        client.app.state.studio.runner.kill_all()


def test_a_bad_metric_spec_exits_2_naming_the_key_and_the_fix(model_cache):
    from peftstudio import api
    from peftstudio.errors import EXIT_USER_ERROR, UserError
    from tests.conftest import CPU

    with pytest.raises(UserError) as refused:
        api.plan(["eval.metrics=[exact_mach, json_field_accuracy]", "training.metric_for_best_model=eval/bleu"],
                 hardware=CPU)
    assert refused.value.exit_code == EXIT_USER_ERROR == 2
    text = refused.value.render()
    assert "eval.metrics[0].name: unknown metric 'exact_mach'" in text and "did you mean exact_match?" in text
    assert "training.metric_for_best_model: 'eval/bleu' is not a metric this run computes" in text
    # The plain sample's answers are no JSON objects: named with file:line before anything loads.
    assert "json_field_accuracy compares JSON objects, but the answer at" in text and "sample.jsonl:" in text
    plan = api.plan(["data.path=embedded:sample-json", "eval.metrics=[exact_match, json_field_accuracy]",
                     "training.metric_for_best_model=exact_match"], hardware=CPU)
    assert [m.name for m in plan.config.eval.metrics] == ["exact_match", "json_field_accuracy"]
