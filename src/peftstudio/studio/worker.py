"""One studio job as a process: `python -m peftstudio.studio.worker JOB_DIR`.

It runs `peftstudio train --config config.yaml` in the job dir and writes the exit code to
`exit_status.json` when training ends. The studio may restart while a job runs; a new studio
process is not the parent of the training and cannot `wait()` for it, so this file is how it
learns the outcome. SIGTERM is passed on to the training, whose checkpoints are written
atomically, so a cancelled run keeps its last complete checkpoint.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from peftstudio.files import write_json

CONFIG_FILE = "config.yaml"
CONSOLE_LOG = "console.log"
EXIT_STATUS = "exit_status.json"


def train_command(job_dir: Path) -> list[str]:
    """The command a user would type for this job."""
    return [sys.executable, "-m", "peftstudio", "train", "--config", str(job_dir / CONFIG_FILE)]


def run(job_dir: Path) -> int:
    """Run the job's training to the end (or until SIGTERM) and record its exit code."""
    (job_dir / EXIT_STATUS).unlink(missing_ok=True)
    with (job_dir / CONSOLE_LOG).open("ab") as log:
        training = subprocess.Popen(train_command(job_dir), cwd=job_dir, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        signal.signal(signal.SIGTERM, lambda *_: training.send_signal(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: training.send_signal(signal.SIGTERM))
        code = training.wait()
    write_json(job_dir / EXIT_STATUS, {"exit_code": code, "finished_at": time.time()})
    return code


if __name__ == "__main__":
    sys.exit(0 if run(Path(sys.argv[1])) == 0 else 1)
