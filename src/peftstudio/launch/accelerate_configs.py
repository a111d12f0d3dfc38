"""Config files for `accelerate launch --config_file`, one writer for each way to run.

The files use accelerate's own keys (what `accelerate config` would ask for), so a user can
read, edit and reuse them without peftstudio. `train` writes one of them into the run dir and
starts its processes with it when `training.num_processes > 1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.files import write_text

CONFIG_NAMES = ("single_gpu", "multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "cpu")
DEFAULT_PORT = 29500
_MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no", "auto": "no"}


@dataclass(frozen=True)
class ProcessLayout:
    """How many processes run where, and the few training numbers accelerate also wants."""

    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    mixed_precision: str = "no"
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    use_cpu: bool = False  # processes compute on CPU and talk over gloo (fsdp, multi-node tests)

    @classmethod
    def of(cls, config: RunConfig) -> "ProcessLayout":
        """The layout a resolved run config asks for."""
        training = config.training
        return cls(training.num_processes, training.num_machines, training.machine_rank, training.main_process_ip,
                   training.main_process_port, _MIXED_PRECISION[training.precision],
                   training.gradient_accumulation_steps, config.optim.max_grad_norm, config.device == "cpu")


def config_name_for(config: RunConfig) -> str:
    """Which accelerate config a resolved run needs."""
    distributed = config.training.distributed
    if distributed in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        return distributed
    if config.device == "cpu":
        return "cpu"
    return "multi_gpu" if config.training.num_processes > 1 else "single_gpu"


def validate_layout(name: str, layout: ProcessLayout) -> None:
    """Every problem of a requested config at once, as one user error (options named as the
    `accelerate-config` command spells them)."""
    problems = []
    if name not in CONFIG_NAMES:
        problems.append(Problem("NAME", f"{name!r} is not an accelerate config peftstudio writes",
                                f"use one of {', '.join(CONFIG_NAMES)}"))
    if name == "single_gpu" and layout.num_processes != 1:
        problems.append(Problem("--num-processes", f"{layout.num_processes} with single_gpu", "use multi_gpu"))
    if name in ("multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3") and layout.num_processes < 2:
        problems.append(Problem("--num-processes", f"{layout.num_processes} with {name}, which needs 2 or more",
                                "use --num-processes 2 or more, or single_gpu"))
    if name.startswith("deepspeed") and layout.use_cpu:
        problems.append(Problem("NAME", f"{name} on CPU: DeepSpeed's ZeRO engine runs on CUDA GPUs here",
                                "use fsdp (shards over gloo on CPU) or ddp"))
    on_cpu = name == "cpu" or layout.use_cpu
    if layout.mixed_precision not in ("no", "bf16", "fp16") or (on_cpu and layout.mixed_precision == "fp16"):
        problems.append(Problem("--mixed-precision", f"{layout.mixed_precision!r}",
                                "use no, bf16 or fp16 (fp16 needs a GPU)"))
    if layout.num_processes % layout.num_machines:
        problems.append(Problem("--num-processes", f"{layout.num_processes} cannot be split evenly over "
                                f"{layout.num_machines} machines", "use a multiple of --num-machines"))
    if not 0 <= layout.machine_rank < layout.num_machines:
        problems.append(Problem("--machine-rank", f"{layout.machine_rank} with {layout.num_machines} machine(s)",
                                f"use 0 to {layout.num_machines - 1}"))
    if layout.num_machines > 1 and not layout.main_process_ip:
        problems.append(Problem("--main-process-ip", f"missing with {layout.num_machines} machines",
                                "give the address of machine 0"))
    if problems:
        raise UserError(problems)


def accelerate_config(name: str, layout: ProcessLayout) -> dict[str, Any]:
    """The accelerate config `name` for `layout`, as the dict its YAML file holds."""
    validate_layout(name, layout)
    config = _common(layout)
    if name == "single_gpu":
        config.update(distributed_type="NO", num_processes=1, num_machines=1, gpu_ids="0")
    elif name == "cpu":
        config.update(_cpu(layout))
    elif name == "multi_gpu":
        config.update(distributed_type="MULTI_GPU")
    elif name == "fsdp":
        config.update(distributed_type="FSDP", fsdp_config=_fsdp(layout.use_cpu))
    else:
        config.update(distributed_type="DEEPSPEED", deepspeed_config=_deepspeed(int(name[-1]), layout))
    return config


def train_overrides(name: str, layout: ProcessLayout) -> list[str]:
    """The overrides that make `peftstudio train` match this config when accelerate starts it."""
    strategy = name if name in ("fsdp", "deepspeed_zero2", "deepspeed_zero3") else \
        ("ddp" if layout.num_processes > 1 else "none")
    overrides = [f"training.distributed={strategy}", f"training.num_processes={layout.num_processes}"]
    if layout.num_machines > 1:
        overrides += [f"training.num_machines={layout.num_machines}", f"training.machine_rank={layout.machine_rank}",
                      f"training.main_process_ip={layout.main_process_ip}"]
    return overrides


def write_accelerate_config(name: str, layout: ProcessLayout, path: Path) -> Path:
    """Write the accelerate config `name` to `path` (YAML), replacing what was there."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(accelerate_config(name, layout), sort_keys=False))
    return path


def _common(layout: ProcessLayout) -> dict[str, Any]:
    port = layout.main_process_port
    if port is None and layout.num_machines > 1:
        port = DEFAULT_PORT
    config: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "mixed_precision": layout.mixed_precision,
        "use_cpu": layout.use_cpu,
        "num_processes": layout.num_processes,
        "num_machines": layout.num_machines,
        "machine_rank": layout.machine_rank,
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
    }
    if layout.num_machines > 1:
        config["main_process_ip"] = layout.main_process_ip
    if port is not None:
        config["main_process_port"] = port
    return config


def _cpu(layout: ProcessLayout) -> dict[str, Any]:
    # accelerate's MULTI_CPU type starts one process unless mpirun is set up, so several CPU
    # processes go through the multi-GPU launcher (torchrun underneath) with use_cpu: gloo.
    if layout.num_processes > 1:
        return {"distributed_type": "MULTI_GPU", "use_cpu": True}
    return {"distributed_type": "NO", "use_cpu": True, "num_processes": 1, "num_machines": 1}


def _fsdp(use_cpu: bool) -> dict[str, Any]:
    # FSDP2 handles frozen base weights next to trainable adapters in one shard group.
    # Checkpoints hold each process's shard (torch.distributed.checkpoint: no process ever holds
    # the whole model or optimizer to save it); the final adapter is gathered on rank 0 and
    # saved as ordinary PEFT files (train/run.py `_save_adapter`). Layers to wrap are
    # the model's own `_no_split_modules` (transformer blocks) when none are named. On CPU
    # every process loads the full weights (no meta-device loading): the processes share one
    # machine's RAM, and the trainer turns accelerate's CPU processes into FSDP2 ones itself
    # (train/distributed.py `shard_on_cpu`), after the model is loaded.
    return {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_reshard_after_forward": True,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_offload_params": False,
        "fsdp_cpu_ram_efficient_loading": not use_cpu,
        "fsdp_activation_checkpointing": False,
    }


def _deepspeed(stage: int, layout: ProcessLayout) -> dict[str, Any]:
    offload = "cpu" if stage == 3 else "none"  # ZeRO-3 is the "does not fit otherwise" choice
    config: dict[str, Any] = {
        "zero_stage": stage,
        "offload_optimizer_device": offload,
        "offload_param_device": offload,
        "gradient_accumulation_steps": layout.gradient_accumulation_steps,
        "gradient_clipping": layout.max_grad_norm,
        "zero3_init_flag": stage == 3,
    }
    if stage == 3:
        config["zero3_save_16bit_model"] = True
    return config
