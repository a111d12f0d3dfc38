"""Cross-field checks of the scale-out keys (training.distributed, num_processes, machines).

Kept apart from `checks.py` because they read like one story: does the requested process
layout make sense, and can this machine run it?
"""

from __future__ import annotations

import importlib.util

from peftstudio.config.schema import RunConfig, TrainingSettings
from peftstudio.errors import Problem
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.settings import ProcessPlace

SHARDED = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")


def distributed_findings(config: RunConfig, hardware: HardwareProfile,
                         place: ProcessPlace) -> tuple[list[Problem], list[Problem], list[str]]:
    """(errors, environment problems, warnings) about the process layout of `config`, planned
    in a process at `place`."""
    errors = _layout_errors(config.training) + launcher_mismatch(config.training, place)
    environment, warnings = _machine_findings(config, hardware)
    return errors, environment, warnings


def _layout_errors(training: TrainingSettings) -> list[Problem]:
    errors = []
    processes, machines = training.num_processes, training.num_machines
    if training.distributed == "none" and processes > 1:
        errors.append(Problem("training.num_processes", f"{processes} with training.distributed=none",
                              "set training.distributed=ddp (or fsdp / deepspeed_zero2 / deepspeed_zero3 on GPUs), "
                              "or training.num_processes=1"))
    if training.distributed != "none" and processes == 1:
        errors.append(Problem("training.distributed", f"{training.distributed} with training.num_processes=1: "
                              "there is nothing to distribute",
                              "set training.num_processes to the number of GPUs (or CPU processes), or "
                              "training.distributed=none"))
    if processes % machines:
        errors.append(Problem("training.num_processes", f"{processes} cannot be split evenly over "
                              f"training.num_machines={machines}", "use a multiple of num_machines"))
    if training.machine_rank >= machines:
        errors.append(Problem("training.machine_rank", f"{training.machine_rank} with training.num_machines={machines}",
                              f"use 0 to {machines - 1} (0 on the machine that hosts the rendezvous)"))
    if machines > 1 and not training.main_process_ip:
        errors.append(Problem("training.main_process_ip", f"not set, but training.num_machines={machines}",
                              "set it to the address of machine 0 that the other machines can reach"))
    return errors


def _machine_findings(config: RunConfig, hardware: HardwareProfile) -> tuple[list[Problem], list[str]]:
    training, device = config.training, config.device
    environment: list[Problem] = []
    warnings: list[str] = []
    if training.num_processes == 1:
        return environment, warnings
    per_machine = max(training.num_processes // training.num_machines, 1)
    if training.distributed.startswith("deepspeed") and device != "cuda":
        environment.append(Problem("training.distributed", f"{training.distributed}: DeepSpeed's ZeRO engine needs "
                                   f"CUDA GPUs; this run is on {device}",
                                   "use training.distributed=fsdp (shards over gloo on CPU) or ddp, or run on GPUs"))
    if training.distributed == "fsdp" and device == "mps":
        environment.append(Problem("training.distributed", "fsdp on Apple MPS: PyTorch has no process group for MPS",
                                   "use training.distributed=none, or run on CPU or CUDA GPUs"))
    if training.distributed.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        environment.append(Problem("training.distributed", f"{training.distributed} needs the deepspeed package, "
                                   "which is not installed",
                                   "pip install deepspeed (on a machine with the CUDA toolkit), or use "
                                   "training.distributed=fsdp / ddp"))
    if device == "mps":
        environment.append(Problem("training.num_processes", f"{training.num_processes} processes on Apple MPS: "
                                   "PyTorch has no multi-process backend for MPS",
                                   "use training.num_processes=1 and training.distributed=none"))
    if device == "cuda" and per_machine > hardware.device_count:
        environment.append(Problem("training.num_processes", f"{per_machine} process(es) per machine but this machine "
                                   f"has {hardware.device_count} GPU(s)",
                                   f"use training.num_processes={hardware.device_count * training.num_machines} "
                                   "(one per GPU)"))
    if device == "cpu" and per_machine > hardware.cpu_cores:
        warnings.append(f"training.num_processes={per_machine} per machine on {hardware.cpu_cores} CPU core(s): "
                        "processes compete for cores, slower than fewer processes")
    return environment, warnings


def launcher_mismatch(training: TrainingSettings, place: ProcessPlace) -> list[Problem]:
    """A process started by someone else's launcher must be planned for that many processes,
    or the schedule and effective batch would be wrong."""
    launched = place.world_size
    if not place.launched or launched == training.num_processes:
        return []
    return [Problem("training.num_processes", f"{training.num_processes}, but the launcher started {launched} "
                    "processes (WORLD_SIZE)", f"set training.num_processes={launched} and training.distributed")]
