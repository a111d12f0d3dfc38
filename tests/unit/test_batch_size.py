"""find-batch-size: the search, the injectable out-of-memory budget, real probes on CPU, and
micro_batch_size=auto in a tiny training run."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from peftstudio.data.tokenization import TokenizedRow
from peftstudio.train.batch_size import candidate_sizes, search
from peftstudio.train.probe import Probe, worst_case_ids
from peftstudio.units import MIB
from tests.conftest import run_cli


def fake_device(limit: int):
    return lambda size: Probe(size, size <= limit, size * MIB, 0.0)


@pytest.mark.parametrize("effective", [1, 6, 16, 64, 96])
def test_search_finds_the_largest_fitting_divisor_from_any_seed(effective):
    candidates = candidate_sizes(effective, None)
    for limit in range(0, effective + 2):
        expected = max((size for size in candidates if size <= limit), default=None)
        for seed in candidates:
            best, probes = search(candidates, seed, fake_device(limit))
            assert best == expected
            assert len({p.micro_batch_size for p in probes}) == len(probes), "no size probed twice"
            if seed == expected:
                assert len(probes) <= 2


def test_a_seed_off_by_a_few_sizes_still_needs_at_most_six_probes():
    candidates = candidate_sizes(128, None)
    for limit in (3, 8, 20, 64, 100):
        for seed in candidates:
            if abs(candidates.index(seed) - candidates.index(max(c for c in candidates if c <= limit))) <= 2:
                assert len(search(candidates, seed, fake_device(limit))[1]) <= 6


def test_candidates_keep_the_effective_batch_exactly():
    assert candidate_sizes(12, None) == [1, 2, 3, 4, 6, 12]
    assert candidate_sizes(12, 5) == [1, 2, 3, 4]


def test_the_probe_sample_is_the_longest_tokenized_row_or_a_full_packed_row():
    rows = [TokenizedRow(ids, ids) for ids in ([1, 2, 3], [4, 5, 6, 7, 8], [9])]
    assert worst_case_ids(rows, 16, packing=False) == [4, 5, 6, 7, 8]
    assert worst_case_ids(rows, 3, packing=False) == [4, 5, 6]
    assert worst_case_ids(rows, 12, packing=True) == [4, 5, 6, 7, 8, 1, 2, 3, 9, 4, 5, 6]


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

    monkeypatch.setenv("PEFTSTUDIO_MEMORY_BUDGET", "20MiB")
    monkeypatch.chdir(tmp_path)
    console = Console(file=io.StringIO(), width=200)
    result = api.train(["training.micro_batch_size=auto", "training.num_batches=2", "data.max_samples=40",
                        "data.validation_split=0"], console=console)
    plan = json.loads((result.run_dir.root / "plan.json").read_text())
    search_result = plan["batch_size_search"]
    training = plan["config"]["training"]
    assert training["micro_batch_size"] == search_result["micro_batch_size"] < 8, "the budget forces a smaller batch"
    assert training["micro_batch_size"] * training["gradient_accumulation_steps"] == search_result["effective_batch"] == 8
    assert plan["decisions"]["training.micro_batch_size"]["origin"] == "measured"
    assert "probe micro-batch" in console.file.getvalue()
