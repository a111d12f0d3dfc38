"""Sweeps on the tiny model: a 3-trial bayes study killed mid-trial and continued, and a 2x2
grid in which the median pruner stops hopeless trials. Trials are a few steps each."""

import json

import pytest
import yaml

from peftstudio.sweep.study import run_sweep
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# Four optimizer steps of micro-batch 2, evaluated at steps 2 and 4 on 4 validation rows.
BASE = {"training.num_batches": 4, "training.micro_batch_size": 2, "training.max_seq_length": 64,
        "training.eval_interval_steps": 2, "training.save_interval_steps": 2, "training.log_interval_steps": 1,
        "data.max_samples": 40, "peft.dropout": 0.0, "optim.warmup_steps": 0}


def write_sweep(path, **fields):
    path.write_text(yaml.safe_dump({"metric": {"name": "eval/loss", "goal": "minimize"}, "base": BASE, **fields}))
    return path


def test_bayes_sweep_killed_mid_trial_continues_where_it_stopped(model_cache, tmp_path):
    sweep = write_sweep(tmp_path / "bayes.yaml", method="bayes", pruner={"type": "none"},
                        parameters={"optim.learning_rate": {"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-2},
                                    "peft.r": {"values": [4, 8]}})
    killed = run_cli("sweep", str(sweep), "--trials", "3", "--study-dir", "study", "--inject-fault", "kill_at_step=3",
                     cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "study/trials/trial-000/checkpoints/checkpoint-2").is_dir()

    result = run_cli("sweep", str(sweep), "--trials", "3", "--study-dir", "study", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "study/results.json").read_text())
    states = {t["number"]: t for t in results["trials"]}
    assert states[0]["state"] == "FAIL" and states[0]["note"] == "interrupted, retried"
    assert [t["state"] for t in results["trials"][1:]] == ["COMPLETE"] * 3
    retry = states[1]
    assert retry["params"] == states[0]["params"] and retry["run_dir"].endswith("trial-000")
    log = (tmp_path / "study/trials/trial-000/run/train.log").read_text()
    # The killed attempt logged steps 1-3; the retry resumed from checkpoint-2, so step 1 ran once.
    assert log.count("step     1/4  loss") == 1 and log.count("step     4/4  loss") == 1
    assert "ran 3 trial(s)" in result.stdout and "eval/loss" in result.stdout
    assert (tmp_path / "study/parallel_coordinates.png").stat().st_size > 10_000

    best = min((t for t in results["trials"] if t["value"] is not None), key=lambda t: t["value"])
    assert results["best"] == best["number"]
    plan = run_cli("plan", "--config", "study/best.yaml", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    config = json.loads(plan.stdout)["config"]
    assert config["optim"]["learning_rate"] == pytest.approx(best["params"]["optim.learning_rate"])
    assert config["peft"]["r"] == best["params"]["peft.r"] and config["training"]["output_dir"] == "./outputs"


def test_grid_sweep_runs_every_combination_and_prunes(model_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEP_NOTE", "note-from-the-environment")
    # Seed 5 runs a good learning rate first: once it completes, the median pruner stops every
    # 1e-6 trial at its first evaluation (3.73 there against 3.22).
    sweep = write_sweep(tmp_path / "grid.yaml", method="grid", seed=5,
                        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                        parameters={"optim.learning_rate": {"values": [0.003, 1e-6]}, "peft.r": {"values": [4, 8]}})
    spec = yaml.safe_load(sweep.read_text())
    spec["base"]["logging.notes"] = "${oc.env:SWEEP_NOTE}"
    sweep.write_text(yaml.safe_dump(spec))
    outcome = run_sweep(sweep, None, tmp_path / "grid")
    combos = sorted((t.params["optim.learning_rate"], t.params["peft.r"]) for t in outcome.trials)
    assert combos == [(1e-6, 4), (1e-6, 8), (0.003, 4), (0.003, 8)]
    hopeless = [t for t in outcome.trials if t.params["optim.learning_rate"] == 1e-6]
    assert [(t.state, t.note[:16]) for t in hopeless] == [("PRUNED", "pruned at step 2")] * 2
    assert outcome.best.params["optim.learning_rate"] == 0.003
    best = outcome.files["best"].read_text()
    # A value read from the environment goes back as its interpolation, never as the value.
    assert "${oc.env:SWEEP_NOTE}" in best and "note-from-the-environment" not in best
