"""Checkpoint visibility, rotation and the same-run guard, without training."""

import json

import pytest

from peftstudio.errors import UserError
from peftstudio.train.checkpoints import STATE_FILE, CheckpointDir, TrainingProgress, choose_resume


def make_checkpoint(root, step, fingerprint="abc", complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        state = TrainingProgress(step=step, fingerprint=fingerprint, identity={"model": ["m"], "data": ["d"]})
        (path / STATE_FILE).write_text(json.dumps(state.__dict__))
    return path


def test_only_complete_checkpoints_are_seen(tmp_path):
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 10, complete=False)
    (tmp_path / ".staging-123" / "checkpoint-15").mkdir(parents=True)
    checkpoints = CheckpointDir(tmp_path)
    assert checkpoints.latest().name == "checkpoint-5"
    choose_resume(checkpoints, "auto", "abc", {})
    assert not (tmp_path / ".staging-123").exists(), "half-written staging is cleaned up"


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    for step in (5, 10, 15, 20):
        make_checkpoint(tmp_path, step)
    checkpoints = CheckpointDir(tmp_path)
    checkpoints.rotate(2, best_step=5)
    assert [step for step, _ in checkpoints.complete()] == [5, 15, 20]


def test_commit_makes_a_checkpoint_visible(tmp_path):
    checkpoints = CheckpointDir(tmp_path)
    staged = checkpoints.new_staging(3) / "checkpoint-3"
    staged.mkdir()
    (staged / "weights").write_bytes(b"1")
    assert checkpoints.latest() is None
    checkpoints.commit(staged, TrainingProgress(step=3, fingerprint="abc"))
    assert checkpoints.latest().name == "checkpoint-3"


def test_another_runs_checkpoints_are_refused_with_what_changed(tmp_path):
    make_checkpoint(tmp_path, 5, fingerprint="other")
    with pytest.raises(UserError) as caught:
        choose_resume(CheckpointDir(tmp_path), "auto", "mine", {"model": ["m"], "data": ["changed"]})
    text = caught.value.render()
    assert "holds checkpoints of another run (its data differs" in text and "training.resume=never" in text


def test_resume_never_starts_fresh(tmp_path):
    make_checkpoint(tmp_path, 5, fingerprint="other")
    assert choose_resume(CheckpointDir(tmp_path), "never", "mine", {}) is None
    assert CheckpointDir(tmp_path).complete() == []


def test_explicit_resume_path_must_be_a_checkpoint(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a complete peftstudio checkpoint"):
        choose_resume(CheckpointDir(tmp_path), str(tmp_path / "x"), "abc", {})


def test_changed_settings_lists_what_differs():
    from peftstudio.train.checkpoints import changed_settings

    saved = {"optim.learning_rate": 0.005, "training.resume": "auto", "seed": 42}
    current = {"optim.learning_rate": 0.001, "training.resume": "never", "seed": 42}
    assert changed_settings(saved, current) == ["optim.learning_rate: 0.005 → 0.001"]
