"""Multi-process runs: `train` starting its own worker processes, and each process knowing
its place among them.

`peftstudio train training.distributed=ddp training.num_processes=2` plans once, prints the
plan once, writes `RUN_DIR/accelerate.yaml` and runs `accelerate launch --config_file it -m
peftstudio train <the same arguments>`. Each worker plans again (cheap, no weights) and
trains; rank 0 alone writes the run dir, metrics, checkpoints and the adapter. A process that
already runs under a launcher (torchrun or accelerate set RANK / WORLD_SIZE) trains in place,
so a user may also start peftstudio with their own launcher.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.errors import PeftStudioError, Problem
from peftstudio.launch.accelerate_configs import ProcessLayout, config_name_for, write_accelerate_config

# Set in the environment of the workers `train` starts: they leave the plan to the launcher.
LAUNCHED_BY_PEFTSTUDIO = "PEFTSTUDIO_LAUNCHED"
ACCELERATE_CONFIG_FILE = "accelerate.yaml"


def world_size() -> int:
    """Processes of this run, as the launcher told this process (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


def launched_by_peftstudio() -> bool:
    return os.environ.get(LAUNCHED_BY_PEFTSTUDIO) == "1"


def needs_launch(config: RunConfig) -> bool:
    """True in the process a user started for a multi-process run, before any worker exists."""
    return config.training.num_processes > 1 and "LOCAL_RANK" not in os.environ


@contextmanager
def main_process_first(device: str):
    """Rank 0 runs the block first, the others after it finished (a no-op in one process).

    Joins the process group early for this; the trainer reuses it later."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    with state.main_process_first():
        yield


def all_gather(value):
    """`value` from every process, in rank order (`[value]` in one process)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def launch_workers(config: RunConfig, arguments: list[str], run_dir: Path, console) -> None:
    """Start the run's processes with `accelerate launch` and wait for them; a failed worker
    is a run failure (exit 1). `arguments` are the ones `train` was given."""
    layout = ProcessLayout.of(config)
    if layout.main_process_port is None and layout.num_machines == 1:
        layout = replace(layout, main_process_port=free_port())
    config_file = write_accelerate_config(config_name_for(config), layout, run_dir / ACCELERATE_CONFIG_FILE)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
               "-m", "peftstudio", "train", *arguments]
    per_machine = layout.num_processes // layout.num_machines
    console.print(f"[bold]launching[/] {per_machine} process(es) on this machine "
                  f"({config.training.distributed}, {layout.num_processes} in total) with {config_file}")
    sys.stdout.flush()
    completed = subprocess.run(command, env={**os.environ, LAUNCHED_BY_PEFTSTUDIO: "1"})
    if completed.returncode != 0:
        raise PeftStudioError(Problem(
            "training", f"a training process failed (accelerate launch exited with {completed.returncode})",
            "see the messages above; starting the same command again resumes from the newest checkpoint"))


def free_port() -> int:
    """A TCP port nobody listens on now, for a one-machine rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
