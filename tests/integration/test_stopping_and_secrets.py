"""Early stopping with the best checkpoint kept, and secrets that never reach the run dir."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_early_stopping_keeps_the_best_checkpoint(model_cache, tmp_path):
    # A threshold no eval can beat: the first eval is the best, two more without improvement stop the run.
    result = run_cli("train", "training.num_batches=30", "training.eval_interval_steps=2", "training.save_interval_steps=2",
                     "training.log_interval_steps=2", "training.early_stopping_patience=2",
                     "training.early_stopping_threshold=100", "training.metric_for_best_model=eval_loss",
                     "training.save_total_limit=1", "data.max_samples=80", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stopped early" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "outputs/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 6
    kept = sorted(p.name for p in (tmp_path / "checkpoints/ckpts").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-6"], "newest plus the best (step 2)"
    state = json.loads((tmp_path / "checkpoints/ckpts/checkpoint-6/peftstudio_state.json").read_text())
    assert state["best_step"] == 2 and state["evaluations_without_improvement"] == 2


def test_secrets_never_reach_the_run_dir_or_logs(model_cache, tmp_path):
    secrets = {"HF_TOKEN": "hf_FAKEsecret123456789", "WANDB_API_KEY": "wandbFAKEsecret987654321"}
    result = run_cli("train", "training.num_batches=2", "training.save_interval_steps=2", "logging=tensorboard",
                     "data.max_samples=40", cwd=tmp_path, env=secrets)
    assert result.returncode == 0, result.stderr
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        content = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in content, f"{value} leaked into {path}"
    for value in secrets.values():
        assert value not in result.stdout + result.stderr
