"""Exact resume and reproducibility on CPU: a run SIGKILLed anywhere and started again with
the same command ends bit-identical to a run never interrupted."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
# 30 rows → 27 for training → 4 batches of 8 per epoch (the last one of 3); 8 steps are two
# epochs. The kills land mid-epoch in the second epoch, and the resume from checkpoint-3 crosses
# the boundary.
ARGS = ["training.num_batches=8", "training.save_interval_steps=3", "training.log_interval_steps=2",
        "training.eval_interval_steps=4", "data.max_samples=30"]


def train(workdir, *extra, fault=None):
    return run_cli("train", *ARGS, *extra, *(["--inject-fault", fault] if fault else []), cwd=workdir)


def records(workdir):
    lines = (workdir / "outputs/metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k in ("step", "loss", "learning_rate", "grad_norm",
                                                                 "eval_loss", "tokens_seen")} for line in lines]


@pytest.fixture(scope="module")
def straight(model_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    result = train(workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def assert_same_run(a, b):
    assert (a / "outputs/adapter/adapter_model.safetensors").read_bytes() == \
        (b / "outputs/adapter/adapter_model.safetensors").read_bytes(), "adapters differ"
    assert records(a) == records(b)


def test_kill_mid_epoch_then_resume_equals_straight_run(straight, tmp_path):
    killed = train(tmp_path, fault="kill_at_step=6")
    assert killed.returncode == -9, killed.stderr
    assert max(r["step"] for r in records(tmp_path)) > 3, "metrics past the checkpoint were written before the kill"
    resumed = train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "checkpoint-3" in resumed.stdout
    assert "settings changed" not in resumed.stdout
    assert "resuming from" in (tmp_path / "outputs/train.log").read_text(), "the log must say where the run resumed"
    assert_same_run(straight, tmp_path)


def test_kill_during_checkpoint_write_then_resume(straight, tmp_path):
    killed = train(tmp_path, fault="kill_in_checkpoint=6")
    assert killed.returncode == -9, killed.stderr
    checkpoint_root = tmp_path / "checkpoints/ckpts"
    assert not (checkpoint_root / "checkpoint-6").exists(), "a half-written checkpoint must not be visible"
    assert list(checkpoint_root.glob(".staging-*")), "the kill left the staged files behind"
    resumed = train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoint-3" in resumed.stdout
    assert not list(checkpoint_root.glob(".staging-*"))
    assert_same_run(straight, tmp_path)


def test_resume_never_starts_over_and_the_same_seed_gives_the_same_run(straight, tmp_path):
    assert train(tmp_path, fault="kill_at_step=5").returncode == -9
    result = train(tmp_path, "training.resume=never")
    assert result.returncode == 0 and "resuming" not in result.stdout
    assert_same_run(straight, tmp_path)


def test_resume_with_changed_settings_warns(straight, tmp_path):
    assert train(tmp_path, fault="kill_at_step=5").returncode == -9
    result = train(tmp_path, "optim.learning_rate=0.001")
    assert result.returncode == 0, result.stderr
    assert "settings changed since the checkpoint" in result.stdout and "optim.learning_rate: 0.005 → 0.001" in result.stdout
