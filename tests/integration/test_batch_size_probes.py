"""find-batch-size with real probes on CPU, and micro_batch_size=auto in a tiny training run."""

from __future__ import annotations

import io
import json

from rich.console import Console

from tests.conftest import run_cli
from tests.unit.test_batch_size import MIB


def test_cli_probes_on_cpu_with_a_budget(tmp_path, model_cache):
    output = tmp_path / "batch.json"
    result = run_cli("find-batch-size", "training.micro_batch_size=2", "training.gradient_accumulation_steps=8",
                     "data.max_samples=40", "--memory-budget", "24MiB", "--output", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    probes = report["probes"]
    assert 1 <= len(probes) <= 6
    assert all({"micro_batch_size", "result", "peak_bytes", "seconds"} <= set(p) for p in probes)
    best = report["micro_batch_size"]
    assert report["micro_batch_size"] * report["gradient_accumulation_steps"] == report["effective_batch"] == 16
    assert any(p["micro_batch_size"] == best and p["result"] == "ok" and p["peak_bytes"] <= 24 * MIB for p in probes)
    assert all(p["result"] == "oom" and p["peak_bytes"] > 24 * MIB for p in probes if p["micro_batch_size"] > best)
    assert best < 16, "the budget must bind, or the test proves nothing"
    assert report["budget_source"] == "--memory-budget" and "probe micro-batch" in result.stdout


def test_micro_batch_auto_probes_at_the_start_of_train(tmp_path, model_cache, monkeypatch):
    from peftstudio import api

    monkeypatch.chdir(tmp_path)
    console = Console(file=io.StringIO(), width=200)
    result = api.train(["training.micro_batch_size=auto", "training.num_batches=2", "data.max_samples=40",
                        "data.validation_split=0"], console=console, memory_budget=20 * MIB)
    plan = json.loads((result.run_dir.root / "plan.json").read_text())
    search_result = plan["batch_size_search"]
    training = plan["config"]["training"]
    assert training["micro_batch_size"] == search_result["micro_batch_size"] < 8, "the budget forces a smaller batch"
    assert training["micro_batch_size"] * training["gradient_accumulation_steps"] == search_result["effective_batch"] == 8
    assert plan["decisions"]["training.micro_batch_size"]["origin"] == "measured"
    assert "probe micro-batch" in console.file.getvalue()
