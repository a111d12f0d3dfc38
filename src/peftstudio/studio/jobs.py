"""Studio jobs: stored in SQLite under the data dir, run one at a time per device.

A job is a directory `DATA_DIR/jobs/<id>/` holding `config.yaml` (what `peftstudio train
--config` runs), the console log, the run's outputs and its checkpoints, plus a row in
`studio.sqlite3` with its status. States:

    queued → running → succeeded | failed | cancelled
    running → interrupted        (the studio found it dead after a restart, outcome unknown)
    cancelled | failed | interrupted → queued   (resume: continues from the last checkpoint)

The studio can stop and start again at any time: queued jobs stay queued, a running job whose
process is still alive is re-attached, one that died is marked interrupted and can be resumed.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from peftstudio.files import write_text
from peftstudio.studio.worker import CONFIG_FILE

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
RESUMABLE = (FAILED, CANCELLED, INTERRUPTED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    device TEXT NOT NULL,
    queue_order REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT ''
)
"""


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    status: str
    device: str
    queue_order: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    exit_code: int | None
    attempts: int
    cancel_requested: int
    message: str

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE

    def to_dict(self) -> dict:
        return {**asdict(self), "resumable": self.resumable}


class JobStore:
    """The jobs table. One short connection per call: the runner thread and request threads
    share the file, and SQLite serialises the writers."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "studio.sqlite3"
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(int(job_id))

    def create(self, name: str, config_yaml: Callable[[Path], str], device: str = "local") -> Job:
        """Insert a queued job; `config_yaml(job_dir)` gives the config it will run."""
        now = time.time()
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO jobs (name, status, device, queue_order, created_at) "
                "VALUES (?, ?, ?, (SELECT COALESCE(MAX(queue_order), 0) + 1 FROM jobs), ?)",
                (name, QUEUED, device, now))
            job_id = cursor.lastrowid
            job_dir = self.job_dir(job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            # What the user typed may hold a credential (a tracker URI): readable by the owner only.
            write_text(job_dir / CONFIG_FILE, config_yaml(job_dir), private=True)
        return self.get(job_id)

    def get(self, job_id: int) -> Job | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        return Job(**dict(row)) if row else None

    def all(self, status: str | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        with closing(self._connect()) as db:
            rows = db.execute(query + " ORDER BY queue_order", args).fetchall()
        return [Job(**dict(row)) for row in rows]

    def update(self, job_id: int, **fields) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with closing(self._connect()) as db, db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), int(job_id)))

    def requeue(self, job_id: int) -> None:
        """Back to the end of the queue (resume)."""
        with closing(self._connect()) as db, db:
            db.execute("UPDATE jobs SET status = ?, cancel_requested = 0, exit_code = NULL, pid = NULL, "
                       "finished_at = NULL, message = '', "
                       "queue_order = (SELECT MAX(queue_order) + 1 FROM jobs) WHERE id = ?", (QUEUED, int(job_id)))


def worker_command(job_dir: Path) -> list[str]:
    """The process that runs one job (see studio/worker.py)."""
    return [sys.executable, "-m", "peftstudio.studio.worker", str(job_dir)]


def process_alive(pid: int, job_dir: Path) -> bool:
    """Whether `pid` is still the worker of `job_dir` (not a zombie, not a reused pid)."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            arguments = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        return state != "Z" and str(job_dir) in arguments
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
