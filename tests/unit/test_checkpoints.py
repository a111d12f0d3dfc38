"""Checkpoint visibility, rotation and the same-run guard, without training."""

import json

import pytest

from peftstudio.errors import UserError
from peftstudio.train.checkpoints import (MANIFEST_FILE, STATE_FILE, CheckpointDir, TrainingProgress, choose_resume,
                                          damage, resume_target)


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


def committed(root, step, files=None):
    """A checkpoint committed as the trainer does: state and manifest inside the atomic rename."""
    checkpoints = CheckpointDir(root)
    staged = checkpoints.new_staging(step) / f"checkpoint-{step}"
    staged.mkdir()
    for name, data in (files or {"adapter_model.safetensors": b"weights" * 20, "optimizer.pt": b"optim" * 20,
                                 "rng_state.pth": b"rng" * 20}).items():
        (staged / name).write_bytes(data)
    checkpoints.commit(staged, TrainingProgress(step=step, fingerprint="abc"))
    return root / f"checkpoint-{step}"


CORRUPTIONS = {
    "truncated adapter": lambda c: (c / "adapter_model.safetensors").write_bytes(b"weights"),
    "zeroed optimizer": lambda c: (c / "optimizer.pt").write_bytes(b"\0" * 100),
    "truncated rng state": lambda c: (c / "rng_state.pth").write_bytes(b"rn"),
    "broken state json": lambda c: (c / STATE_FILE).write_text((c / STATE_FILE).read_text()[:-10]),
    "deleted file": lambda c: (c / "optimizer.pt").unlink(),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_damaged_checkpoint_is_moved_aside_and_the_next_newest_used(tmp_path, kind):
    committed(tmp_path, 5)
    newest = committed(tmp_path, 10)
    CORRUPTIONS[kind](newest)
    reports = []
    chosen = choose_resume(CheckpointDir(tmp_path), "auto", "abc", {}, report=reports.append)
    assert chosen.name == "checkpoint-5"
    assert (tmp_path / "checkpoint-10.corrupt").is_dir() and not newest.exists()
    assert len(reports) == 1 and "checkpoint-10" in reports[0] and "moved aside to checkpoint-10.corrupt" in reports[0]
    named = {"truncated adapter": "adapter_model.safetensors", "zeroed optimizer": "optimizer.pt",
             "truncated rng state": "rng_state.pth", "broken state json": STATE_FILE, "deleted file": "optimizer.pt"}
    assert named[kind] in reports[0], reports[0]
    assert "weights_only" not in reports[0]


def test_no_sound_checkpoint_left_is_a_user_error(tmp_path):
    CORRUPTIONS["truncated adapter"](committed(tmp_path, 5))
    with pytest.raises(UserError) as caught:
        choose_resume(CheckpointDir(tmp_path), "auto", "abc", {})
    text = caught.value.render()
    assert caught.value.exit_code == 2 and "no usable checkpoint left" in text and "training.resume=never" in text
    assert "adapter_model.safetensors" in text and (tmp_path / "checkpoint-5.corrupt").is_dir()


def test_a_launcher_looks_without_moving_anything(tmp_path):
    committed(tmp_path, 5)
    CORRUPTIONS["zeroed optimizer"](committed(tmp_path, 10))
    assert resume_target(CheckpointDir(tmp_path), "auto", "abc", {}).name == "checkpoint-5"
    assert (tmp_path / "checkpoint-10").is_dir()


def test_an_explicit_damaged_checkpoint_is_named(tmp_path):
    path = committed(tmp_path, 5)
    CORRUPTIONS["truncated rng state"](path)
    with pytest.raises(UserError) as caught:
        choose_resume(CheckpointDir(tmp_path), str(path), "abc", {})
    assert "rng_state.pth" in caught.value.render() and "is damaged" in caught.value.render()


def test_the_manifest_covers_every_file_and_the_state(tmp_path):
    path = committed(tmp_path, 5)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert set(manifest) == {"adapter_model.safetensors", "optimizer.pt", "rng_state.pth", STATE_FILE}
    assert damage(path) is None
