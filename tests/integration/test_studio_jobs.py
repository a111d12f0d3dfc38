"""Studio jobs with a real training subprocess and a real SQLite file: a studio restart while a
job runs (re-attached), cancel by SIGTERM keeping the last checkpoint, and resume finishing the
run from that checkpoint. (Queue order and the restart cases without training are in
tests/unit/test_studio_api.py, with a stand-in worker.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from peftstudio.studio.context import StudioSettings
from peftstudio.studio.server import create_app
from tests.conftest import CPU

pytestmark = pytest.mark.slow

STEPS = 8
LONG = {"groups": {"model": "tiny"}, "values": {"training.num_batches": STEPS, "training.save_interval_steps": 2,
                                                 "training.log_interval_steps": 1, "data.max_samples": 40}}


def studio(data_dir: Path) -> TestClient:
    app = create_app(StudioSettings(data_dir=data_dir))
    app.state.studio._hardware = CPU
    app.state.studio.runner.poll_seconds = 0.2
    return TestClient(app)


def wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout} s")


def checkpoints(data_dir: Path, job_id: int) -> list[int]:
    root = data_dir / "jobs" / str(job_id) / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*") if p.name.split("-")[1].isdigit())


def test_restart_cancel_and_resume_with_real_training(model_cache, tmp_path):
    data_dir = tmp_path / "studio"
    with studio(data_dir) as first:
        long_job = first.post("/api/jobs", json={"state": LONG, "name": "long"}).json()["id"]
        wait_for(lambda: checkpoints(data_dir, long_job), what="a first checkpoint")
    # The first studio is gone; the training goes on and the new studio finds it again.
    with studio(data_dir) as second:
        assert second.get(f"/api/jobs/{long_job}").json()["status"] == "running"
        wait_for(lambda: len(second.get(f"/api/jobs/{long_job}/metrics").json()["records"]) >= 2, what="live metrics")
        second.post(f"/api/jobs/{long_job}/cancel")
        cancelled = wait_for(lambda: (j := second.get(f"/api/jobs/{long_job}").json())["status"] == "cancelled" and j,
                             what="cancelled")
        kept = checkpoints(data_dir, long_job)
        assert kept and max(kept) < STEPS, "the run stopped early and kept its complete checkpoints"
        assert cancelled["resumable"]
        second.post(f"/api/jobs/{long_job}/resume")
        done = wait_for(lambda: (j := second.get(f"/api/jobs/{long_job}").json())["status"] in ("succeeded", "failed")
                        and j, what="resumed job done")
        records = second.get(f"/api/jobs/{long_job}/metrics").json()["records"]
        tried = second.post(f"/api/jobs/{long_job}/generate", json={"prompt": "Reverse the order of these words.\nisland pencil"})
    assert done["status"] == "succeeded", done["log_tail"]
    assert done["attempts"] == 2 and "resuming from" in done["log_tail"]
    assert done["latest"]["step"] == STEPS
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, STEPS + 1)), "one continuous loss curve across the cancel"
    assert {"loss.png", "metrics.jsonl"} <= set(done["files"]) and "adapter_model.safetensors" in done["adapter_files"]
    assert tried.status_code == 200, tried.text
    answer = tried.json()
    assert answer["prompt"].startswith("Reverse") and isinstance(answer["adapter"], str) and isinstance(answer["base"], str)
