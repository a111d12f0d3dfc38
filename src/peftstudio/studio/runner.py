"""The job queue: starts queued jobs in order, one per device, and watches them finish.

Jobs run in their own session (process group), so stopping the studio with Ctrl-C does not
stop them; the next studio re-attaches to them (see `JobRunner.recover`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from peftstudio.errors import Problem, UserError
from peftstudio.settings import child_environment
from peftstudio.studio.jobs import (CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED, Job, JobStore,
                                    process_alive, worker_command)
from peftstudio.studio.worker import EXIT_STATUS
from peftstudio.train.lock import Holder, holder_of

LOST_MESSAGE = ("the studio stopped while this job ran and the run did not finish; "
                "resume continues from its last complete checkpoint")


class JobRunner:
    """Starts, watches, cancels and resumes jobs of a `JobStore`."""

    def __init__(self, store: JobStore, max_running_per_device: int = 1,
                 command: Callable[[Path], list[str]] = worker_command, poll_seconds: float = 0.5):
        self.store = store
        self.max_running_per_device = max_running_per_device
        self.command = command
        self.poll_seconds = poll_seconds
        self._children: dict[int, subprocess.Popen] = {}
        # Secrets (W&B / MLflow keys) live only in this process's memory and the job's environment.
        self._secrets: dict[int, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Recover jobs left by an earlier studio, then run the queue in a background thread."""
        self.recover()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="peftstudio-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; running jobs go on and are re-attached by the next studio."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            self.tick()

    def recover(self) -> None:
        """Settle the jobs an earlier studio left running: alive → watched again; finished →
        their recorded outcome; dead without an outcome → interrupted."""
        with self._lock:
            for job in self.store.all(RUNNING):
                self._settle(job)

    def tick(self) -> None:
        """One pass: notice finished jobs, start queued ones where a device is free."""
        with self._lock:
            for job in self.store.all(RUNNING):
                self._settle(job)
            busy = Counter(job.device for job in self.store.all(RUNNING))
            for job in self.store.all(QUEUED):
                if busy[job.device] < self.max_running_per_device:
                    self._launch(job)
                    busy[job.device] += 1

    def submit_secrets(self, job_id: int, secrets: dict[str, str]) -> None:
        with self._lock:
            self._secrets[job_id] = {k: v for k, v in secrets.items() if v}

    def _settle(self, job: Job) -> None:
        child = self._children.get(job.id)
        job_dir = self.store.job_dir(job.id)
        alive = child.poll() is None if child is not None else bool(job.pid) and process_alive(job.pid, job_dir)
        if alive or run_holder(job_dir) is not None:
            return  # a training whose worker died (a killed studio) still holds its run: not interrupted
        self._children.pop(job.id, None)
        status, code, message = self._outcome(job, job_dir)
        self.store.update(job.id, status=status, exit_code=code, finished_at=time.time(), pid=None, message=message)

    @staticmethod
    def _outcome(job: Job, job_dir: Path) -> tuple[str, int | None, str]:
        """What the worker recorded; without a record (the worker died), a run that wrote its
        summary at its last step succeeded, anything else is interrupted."""
        try:
            code = int(json.loads((job_dir / EXIT_STATUS).read_text(encoding="utf-8"))["exit_code"])
        except (OSError, ValueError, KeyError, TypeError):
            if job.cancel_requested:
                return CANCELLED, None, "cancelled; resume continues from the last complete checkpoint"
            if _finished_unattended(job_dir):
                return SUCCEEDED, None, "finished while the studio was away"
            return INTERRUPTED, None, LOST_MESSAGE
        if code == 0:
            return SUCCEEDED, code, ""
        if job.cancel_requested:
            return CANCELLED, code, "cancelled; resume continues from the last complete checkpoint"
        return FAILED, code, f"training exited with code {code}; see the log below"

    def _launch(self, job: Job) -> None:
        job_dir = self.store.job_dir(job.id)
        (job_dir / EXIT_STATUS).unlink(missing_ok=True)
        env = child_environment(self._secrets.get(job.id, {}))
        with (job_dir / "worker.log").open("ab") as worker_log:
            child = subprocess.Popen(self.command(job_dir), cwd=job_dir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
        self._children[job.id] = child
        self.store.update(job.id, status=RUNNING, pid=child.pid, started_at=time.time(), attempts=job.attempts + 1,
                          exit_code=None, finished_at=None, message="")

    def cancel(self, job_id: int) -> Job:
        """Queued: dropped from the queue. Running: SIGTERM to its process group; the run keeps
        its last complete checkpoint (checkpoints are written atomically)."""
        with self._lock:
            job = self._require(job_id)
            if job.status == QUEUED:
                self.store.update(job.id, status=CANCELLED, finished_at=time.time(), message="cancelled before it started")
            elif job.status == RUNNING:
                self.store.update(job.id, cancel_requested=1)
                try:
                    os.killpg(job.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError, TypeError):
                    pass
                _stop_orphan(self.store.job_dir(job.id), job.pid)  # its worker is gone; the training may not be
            else:
                raise UserError(Problem(f"job {job.id}", f"is {job.status}; only queued or running jobs can be cancelled",
                                        "resume it instead" if job.resumable else "start a new job"))
            return self.store.get(job.id)

    def resume(self, job_id: int) -> Job:
        """Queue a cancelled, failed or interrupted job again; training resumes from the newest
        complete checkpoint in its checkpoint dir."""
        with self._lock:
            job = self._require(job_id)
            if not job.resumable:
                raise UserError(Problem(f"job {job.id}", f"is {job.status}; only cancelled, failed or interrupted "
                                        "jobs can be resumed", "wait for it to finish, or start a new job"))
            holder = run_holder(self.store.job_dir(job.id))
            if holder is not None:
                raise UserError(Problem(f"job {job.id}", f"its training is still running ({holder})",
                                        "wait for it to end, or cancel the job first"))
            self.store.requeue(job.id)
            return self.store.get(job.id)

    def _require(self, job_id: int) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise LookupError(job_id)
        return job

    def kill_all(self) -> None:
        """Stop every job this studio started (tests call it so that no training outlives them)."""
        with self._lock:
            for child in self._children.values():
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
            for child in self._children.values():
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)


def run_holder(job_dir: Path) -> Holder | None:
    """The live training process holding a job's run dirs (see train/lock.py), if any."""
    return holder_of(job_dir / "outputs") or holder_of(job_dir / "checkpoints")


def _stop_orphan(job_dir: Path, group: int | None) -> None:
    """SIGTERM the training holding a job's run dirs unless the job's process group (already
    signalled) holds it: one SIGTERM lets it stop cleanly, a second would cut that short."""
    holder = run_holder(job_dir)
    if holder is None or holder.pid <= 0:
        return
    try:
        if os.getpgid(holder.pid) != group:
            os.kill(holder.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


def _finished_unattended(job_dir: Path) -> bool:
    try:
        summary = json.loads((job_dir / "outputs" / "summary.json").read_text(encoding="utf-8"))
        return summary["final_step"] >= summary["max_steps"] or bool(summary["stopped_early"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
