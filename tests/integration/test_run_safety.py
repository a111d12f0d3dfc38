"""Nothing lost, nothing hangs: a second run on the same dirs is refused while the first runs
undisturbed; damaged checkpoints are moved aside and the run resumes from the next newest one,
ending bit-identical to an uninterrupted run; SIGTERM says where the run stopped; a finished run
rerun does nothing; a recreated output dir keeps its metrics history."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
ARGS = ["training.num_batches=8", "training.save_interval_steps=3", "training.log_interval_steps=2",
        "training.eval_interval_steps=4", "data.max_samples=60"]


def adapter(workdir):
    return (workdir / "outputs/adapter/adapter_model.safetensors").read_bytes()


def records(workdir):
    return [json.loads(line) for line in (workdir / "outputs/metrics.jsonl").read_text().splitlines()]


def same_records(a, b):
    keys = ("step", "loss", "learning_rate", "grad_norm", "eval_loss", "tokens_seen")
    return [{k: r[k] for k in keys if k in r} for r in records(a)] == [{k: r[k] for k in keys if k in r} for r in records(b)]


@pytest.fixture(scope="module")
def first(model_cache, tmp_path_factory):
    """A run that a second run on the same dirs tried to join while it trained."""
    import os

    workdir = tmp_path_factory.mktemp("first")
    lock = workdir / "outputs/.peftstudio.lock"
    running = subprocess.Popen([sys.executable, "-m", "peftstudio", "train", *ARGS], cwd=workdir, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    second = run_cli("train", *ARGS, cwd=workdir)
    out, err = running.communicate(timeout=300)
    assert running.returncode == 0, err
    return workdir, second


def test_a_second_run_on_the_same_dirs_exits_2_naming_the_holder(first):
    workdir, second = first
    assert second.returncode == 2, second.stderr
    assert "is in use by another run (pid" in second.stderr and "Traceback" not in second.stderr
    assert sorted(p.name for p in (workdir / "checkpoints/ckpts").glob("checkpoint-*")) == \
        ["checkpoint-3", "checkpoint-6", "checkpoint-8"], "the first run's checkpoints, and only those"
    assert max(r["step"] for r in records(workdir)) == 8


@pytest.fixture(scope="module")
def stopped(first, tmp_path_factory):
    """The same run stopped by SIGTERM at step 7 (checkpoints 3 and 6 on disk)."""
    workdir = tmp_path_factory.mktemp("stopped")
    result = run_cli("train", *ARGS, "--inject-fault", "term_at_step=7", cwd=workdir)
    return workdir, result


def test_sigterm_says_where_the_run_stopped_and_how_to_resume(stopped):
    workdir, result = stopped
    assert result.returncode == 143, result.stderr
    assert "SIGTERM at step 7 of 8" in result.stderr and "checkpoint-6 (step 6)" in result.stderr
    assert "rerun the same command to resume" in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / "outputs/.peftstudio.lock").read_text(), "the lock was released"


def truncate_adapter(checkpoint):
    path = checkpoint / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def break_state(checkpoint):
    path = checkpoint / "peftstudio_state.json"
    path.write_text(path.read_text()[:-20])


@pytest.mark.parametrize("corrupt", [truncate_adapter, break_state])
def test_a_damaged_newest_checkpoint_falls_back_and_ends_like_an_uninterrupted_run(first, stopped, corrupt, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(stopped[0], workdir)
    corrupt(workdir / "checkpoints/ckpts/checkpoint-6")
    if corrupt is break_state:
        shutil.rmtree(workdir / "outputs")  # the output dir recreated from the checkpoints keeps its history
    result = run_cli("train", *ARGS, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "moved aside to checkpoint-6.corrupt" in result.stdout and "checkpoint-3 (step 3)" in result.stdout
    assert (workdir / "checkpoints/ckpts/checkpoint-6.corrupt").is_dir()
    assert adapter(workdir) == adapter(first[0]) and same_records(workdir, first[0])


def test_no_sound_checkpoint_left_exits_2(stopped, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(stopped[0], workdir)
    for step in (3, 6):
        truncate_adapter(workdir / f"checkpoints/ckpts/checkpoint-{step}")
    result = run_cli("train", *ARGS, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "no usable checkpoint left" in result.stderr and "training.resume=never" in result.stderr
    assert "weights_only" not in result.stderr + result.stdout


def test_a_finished_run_rerun_does_nothing(first):
    workdir = first[0]
    before = {p.name: p.stat().st_mtime_ns for p in (workdir / "checkpoints/ckpts").glob("checkpoint-*")}
    result = run_cli("train", *ARGS, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout and "step     2/8" not in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (workdir / "checkpoints/ckpts").glob("checkpoint-*")} == before
