"""`train` starting the worker processes of a multi-process run.

`peftstudio train training.distributed=ddp training.num_processes=2` plans once, prints the
plan once, saves it as `RUN_DIR/plan.json`, writes `RUN_DIR/accelerate.yaml` and runs
`accelerate launch --config_file it -m peftstudio train --plan RUN_DIR/plan.json`. Each worker
executes that saved plan (no planning of its own); rank 0 alone writes the run dir, metrics,
checkpoints and the adapter. A process already started by a launcher (torchrun / accelerate set
LOCAL_RANK) trains in place, so a user may also start peftstudio with their own launcher.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.errors import PeftStudioError, Problem
from peftstudio.launch.accelerate_configs import ProcessLayout, config_name_for, write_accelerate_config

ACCELERATE_CONFIG_FILE = "accelerate.yaml"


def launch_workers(config: RunConfig, plan_file: Path, run_dir: Path, console,
                   worker_arguments: list[str] | None = None) -> None:
    """Start the run's processes with `accelerate launch`, each executing `plan_file`, and wait
    for them; a failed worker is a run failure (exit 1). `worker_arguments` are passed on to
    each worker's `train` (test hooks such as an injected fault)."""
    layout = ProcessLayout.of(config)
    if layout.main_process_port is None and layout.num_machines == 1:
        layout = replace(layout, main_process_port=free_port())
    config_file = write_accelerate_config(config_name_for(config), layout, run_dir / ACCELERATE_CONFIG_FILE)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "-m", "peftstudio", "train", "--plan", str(Path(plan_file).resolve()), *(worker_arguments or [])]
    per_machine = layout.num_processes // layout.num_machines
    console.print(f"[bold]launching[/] {per_machine} process(es) on this machine "
                  f"({config.training.distributed}, {layout.num_processes} in total) with {config_file}")
    sys.stdout.flush()
    completed = subprocess.run(command)
    if completed.returncode == 0:
        return
    if layout.num_machines > 1:
        raise PeftStudioError(Problem(
            "training", f"a training process on machine {layout.machine_rank} of {layout.num_machines} failed or lost "
            f"contact with the other machines (accelerate launch exited with {completed.returncode}); when one "
            "machine stops, the others stop too",
            "see the messages above on every machine; start the same command again on every machine to resume "
            "from the newest checkpoint"))
    raise PeftStudioError(Problem(
        "training", f"a training process failed (accelerate launch exited with {completed.returncode})",
        "see the messages above; starting the same command again resumes from the newest checkpoint"))


def free_port() -> int:
    """A TCP port nobody listens on now, for a one-machine rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
