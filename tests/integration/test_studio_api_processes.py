"""The studio's parts that start processes: `peftstudio studio` refusing a public host without a
token, and the job queue.

Queue tests run a stand-in worker (a few lines of Python that wait for a `release` file and
write an exit status like the real worker), so order, cancel, resume and restart are checked
in about a second; tests/integration/test_studio_jobs.py does the same with real training.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import yaml

from tests.conftest import CPU, run_cli
from tests.unit.test_studio_api import TINY, make_client, stand_in


def test_non_loopback_without_token_is_refused_with_exit_2(tmp_path):
    result = run_cli("studio", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d"), cwd=tmp_path,
                     env={"PEFTSTUDIO_STUDIO_TOKEN": ""})
    assert result.returncode == 2
    assert "--host 0.0.0.0" in result.stderr and "--token" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists(), "nothing is created before the refusal"
    short = run_cli("studio", "--host", "0.0.0.0", "--token", "s3cret", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert short.returncode == 2 and "at least 16" in short.stderr and "s3cret" not in short.stderr
    assert not (tmp_path / "d").exists()


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def create_job(client, name):
    response = client.post("/api/jobs", json={"state": TINY, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def release(client, job_id, code=0):
    job_dir = client.app.state.studio.jobs.job_dir(job_id)
    (job_dir / "release").write_text(str(code))


def status(client, job_id):
    client.app.state.studio.runner.tick()
    return client.get(f"/api/jobs/{job_id}").json()["status"]


def test_jobs_run_one_at_a_time_in_queue_order(client):
    first, second, third = (create_job(client, name) for name in ("a", "b", "c"))
    assert [status(client, j) for j in (first, second, third)] == ["running", "queued", "queued"]
    release(client, first)
    wait_for(lambda: status(client, first) == "succeeded")
    assert [status(client, j) for j in (second, third)] == ["running", "queued"]
    release(client, second, code=1)
    wait_for(lambda: status(client, second) == "failed")
    assert status(client, third) == "running"
    job = client.get(f"/api/jobs/{second}").json()
    assert job["resumable"] and job["exit_code"] == 1
    config = yaml.safe_load(job["config_yaml"])
    assert config["training"]["output_dir"].endswith(f"jobs/{second}/outputs")


def test_cancel_and_resume(client):
    running, queued = create_job(client, "a"), create_job(client, "b")
    assert status(client, running) == "running"
    assert client.post(f"/api/jobs/{queued}/cancel").json()["status"] == "cancelled"
    client.post(f"/api/jobs/{running}/cancel")
    wait_for(lambda: status(client, running) == "cancelled")
    assert client.post(f"/api/jobs/{running}/cancel").status_code == 400  # already finished
    resumed = client.post(f"/api/jobs/{queued}/resume").json()
    assert resumed["status"] in ("queued", "running")
    wait_for(lambda: status(client, queued) == "running")
    assert client.post(f"/api/jobs/{queued}/resume").status_code == 400  # running: nothing to resume
    assert client.get("/api/jobs/999").status_code == 404


def test_restart_keeps_queued_jobs_and_marks_dead_ones_interrupted(tmp_path):
    data_dir = tmp_path / "studio"
    with make_client(data_dir) as client:
        running, queued = create_job(client, "a"), create_job(client, "b")
        pid = client.get(f"/api/jobs/{running}").json()["pid"]
        client.app.state.studio.runner.stop()
    os.killpg(pid, signal.SIGKILL)  # the machine "crashed" while the studio was down
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3])
    with make_client(data_dir) as client:
        client.app.state.studio.runner.recover()
        job = client.get(f"/api/jobs/{running}").json()
        assert job["status"] == "interrupted" and job["resumable"] and "resume" in job["message"]
        assert client.get(f"/api/jobs/{queued}").json()["status"] == "queued"
        assert status(client, queued) == "running"
        client.app.state.studio.runner.kill_all()


def test_restart_reattaches_a_job_that_is_still_running(tmp_path):
    data_dir = tmp_path / "studio"
    with make_client(data_dir) as client:
        job_id = create_job(client, "a")
        client.app.state.studio.runner.stop()
        old_runner = client.app.state.studio.runner
    with make_client(data_dir) as client:
        client.app.state.studio.runner.recover()
        assert status(client, job_id) == "running"
        release(client, job_id)
        wait_for(lambda: status(client, job_id) == "succeeded")
    old_runner.kill_all()


def test_metrics_offsets_and_run_files(client):
    job_id = create_job(client, "a")
    outputs = client.app.state.studio.jobs.job_dir(job_id) / "outputs"
    outputs.mkdir()
    (outputs / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2))
                                           + json.dumps({"step": 3, "loss": float("inf")}) + "\n")
    page = client.get(f"/api/jobs/{job_id}/metrics", params={"offset": 1}).json()
    assert [r["step"] for r in page["records"]] == [2, 3] and page["next_offset"] == 3
    assert page["records"][1]["loss"] is None
    assert client.get(f"/api/jobs/{job_id}/metrics", params={"offset": 9}).json()["reset"] is True
    assert client.get(f"/api/jobs/{job_id}/files/metrics.jsonl").status_code == 200
    assert client.get(f"/api/jobs/{job_id}/files/..%2Fconfig.yaml").status_code == 404
    assert client.get(f"/api/jobs/{job_id}/adapter/..%2F..%2Fconfig.yaml").status_code == 404
    assert client.post(f"/api/jobs/{job_id}/generate", json={"prompt": "hi"}).status_code == 409
    release(client, job_id)
    wait_for(lambda: status(client, job_id) == "succeeded")
    events = client.get(f"/api/jobs/{job_id}/events").text
    assert events.count("event: metrics") == 3 and '"status": "succeeded"' in events


def test_a_failed_job_shows_diagnose_findings(client):
    from peftstudio import api

    job_id = create_job(client, "diverges")
    outputs = client.app.state.studio.jobs.job_dir(job_id) / "outputs"
    outputs.mkdir()
    (outputs / "plan.json").write_text(api.plan(["model=tiny"], hardware=CPU).to_json())
    losses = [2.0, 1.8, float("nan"), float("nan")]
    (outputs / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": loss, "grad_norm": 3.0}) + "\n"
                                                   for s, loss in enumerate(losses, 1)))
    release(client, job_id, code=1)
    wait_for(lambda: status(client, job_id) == "failed")
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["latest"]["loss"] is None, "NaN travels as null, JSON has no NaN"
    assert job["diagnosis"]["available"]
    nan, = [f for f in job["diagnosis"]["findings"] if f["problem"] == "nan_loss"]
    assert any(o.startswith("optim.learning_rate=") for o in nan["overrides"])


def test_secrets_go_to_the_job_environment_only(client):
    response = client.post("/api/jobs", json={"state": TINY, "secrets": {"WANDB_API_KEY": "wk-123", "PATH": "/x"}})
    job_id = response.json()["id"]
    pid = client.get(f"/api/jobs/{job_id}").json()["pid"]
    assert b"WANDB_API_KEY=wk-123" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"PATH=/x" not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    job_dir = client.app.state.studio.jobs.job_dir(job_id)
    assert not any("wk-123" in p.read_text(errors="ignore") for p in job_dir.rglob("*") if p.is_file())
    assert "wk-123" not in (client.app.state.studio.jobs.path).read_bytes().decode(errors="ignore")


def test_a_reused_pid_is_not_mistaken_for_a_job(tmp_path):
    import subprocess

    from peftstudio.studio.jobs import process_alive

    (tmp_path / "10").mkdir()
    child = subprocess.Popen(stand_in(tmp_path / "10"))
    try:
        wait_for(lambda: (tmp_path / "10" / "started").exists())
        assert process_alive(child.pid, tmp_path / "10")
        assert not process_alive(child.pid, tmp_path / "1"), "jobs/1 is a prefix of jobs/10, not the same job"
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, tmp_path / "10")


def test_a_training_that_outlived_its_worker_is_not_called_interrupted(tmp_path):
    """A studio and its worker killed, the training itself still alive (it holds its run dirs'
    lock): the next studio keeps the job running and refuses to resume on top of it."""
    import subprocess
    import sys

    data_dir = tmp_path / "studio"
    with make_client(data_dir) as client:
        job_id = create_job(client, "a")
        pid = client.get(f"/api/jobs/{job_id}").json()["pid"]
        client.app.state.studio.runner.stop()
    outputs = data_dir / "jobs" / str(job_id) / "outputs"
    orphan = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from peftstudio.train.lock import RunLock\n"
                               "with RunLock({'training.output_dir': Path(sys.argv[1])}):\n"
                               "    print('held', flush=True); time.sleep(120)", str(outputs)],
                              stdout=subprocess.PIPE, text=True)
    assert orphan.stdout.readline().strip() == "held"
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3])
    try:
        with make_client(data_dir) as client:
            client.app.state.studio.runner.recover()
            assert status(client, job_id) == "running"
            client.app.state.studio.runner.cancel(job_id)  # the worker is gone: the training itself is stopped
            orphan.wait(timeout=10)
            client.app.state.studio.runner.recover()
            assert status(client, job_id) == "cancelled"
    finally:
        orphan.kill()
