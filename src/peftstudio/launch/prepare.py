"""`peftstudio launch`: plan the run here, pick the GPU, write the SkyPilot task and its config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.errors import Problem, UserError
from peftstudio.launch.skypilot import TaskSpec, build_task, check_nodes, check_spot, launch_command, write_task
from peftstudio.plan.cost import CostOption, CostReport, cost_report
from peftstudio.plan.prices import PriceFile, load_prices

GB = 1000**3
# pip packages with CUDA wheels (torch alone is ~3 GB installed), the hub cache, logs.
DISK_HEADROOM_GB = 40


@dataclass(frozen=True)
class LaunchResult:
    task_path: Path
    config_path: Path
    command: str
    accelerator: str | None
    option: CostOption | None
    notes: list[str] = field(default_factory=list)


def prepare_launch(overrides: list[str], config_file: Path | None, provider: str, gpu: str | None, spot: bool,
                   bucket: str | None, out: Path, price_file: Path | None = None, num_nodes: int = 1) -> LaunchResult:
    """Check the run here (config, data, memory), choose the GPU, write the task and its config.
    `num_nodes` > 1: one GPU on each of that many machines, training together (ddp unless the
    config names a strategy), checkpoints in the bucket."""
    from peftstudio.plan.pipeline import make_plan

    check_spot(provider, spot, bucket)
    check_nodes(num_nodes, bucket)
    plan = make_plan(overrides, config_file)
    prices = load_prices(price_file)
    report = cost_report(plan, price_file)
    config = plan.requested  # `auto` intact: the remote machine resolves it for itself
    notes = []
    if provider == "local":
        accelerator, option = _local_accelerator(plan.hardware, prices), None
        notes.append("local: runs in the Kubernetes cluster that `sky local up` starts on this machine")
    else:
        option = _choose(report, prices, provider, gpu)
        accelerator = f"{prices.gpus[option.gpu].skypilot}:1"
    if bucket is None:
        notes.append("checkpoints stay on the machine's disk: relaunching on the same cluster resumes; "
                     "add --bucket to survive losing the machine")
    spec = TaskSpec(provider, accelerator, spot, bucket, _disk_gb(config), _source_checkout(), _version(), _extras(config),
                    num_nodes)
    if spec.source_dir is None:
        notes.append(f"setup installs peftstudio=={spec.version} with pip on the remote: that version must be on "
                     "its package index (from a source checkout, launch syncs and installs the checkout instead)")
    config_path = out.with_name(out.stem + ".run.yaml")
    task, values = build_task(config, spec, config_path)
    write_task(task, values, out, config_path)
    return LaunchResult(out, config_path, launch_command(task, out, spec), accelerator, option, notes)


def _choose(report: CostReport, prices: PriceFile, provider: str, gpu: str | None) -> CostOption:
    offers = prices.providers.get(provider)
    if not offers:
        raise UserError(Problem("--provider", f"{provider} has no GPUs in the price file {prices.source}",
                                "add it under providers: in the price file"))
    fitting = [o for o in report.options if o.provider == provider]
    if gpu is None:
        if not fitting:
            raise UserError(Problem("--gpu", f"no {provider} GPU fits this run in memory ({', '.join(offers)})",
                                    "lower training.micro_batch_size / max_seq_length, or use peft=qlora"))
        return fitting[0]
    name, _, count = gpu.partition(":")
    if count not in ("", "1"):
        raise UserError(Problem("--gpu", f"{gpu}: this version trains on one GPU", f"use --gpu {name}:1"))
    key = next((k for k in offers if name.lower() in (k.lower(), prices.gpus[k].skypilot.lower())), None)
    if key is None:
        raise UserError(Problem("--gpu", f"{name} is not offered by {provider} in the price file",
                                f"use one of {', '.join(offers)} (or add it to the price file)"))
    chosen = next((o for o in fitting if o.gpu == key), None)
    if chosen is None:
        raise UserError(Problem("--gpu", f"{key} ({prices.gpus[key].memory_gib:g} GiB) is too small for this run",
                                f"use {', '.join(o.gpu for o in fitting) or 'a larger GPU'}, or lower the memory "
                                "(`peftstudio plan` shows the overrides that fit)"))
    return chosen


def _local_accelerator(hardware, prices: PriceFile) -> str | None:
    if hardware.accelerator != "cuda" or not hardware.device_names:
        return None
    key = prices.gpu_for_device(hardware.device_names[0])
    return f"{prices.gpus[key].skypilot}:1" if key else None


def _disk_gb(config) -> int:
    """The base model's download (bf16 safetensors) with room to spare, plus the checkpoints."""
    from peftstudio.plan.disk import checkpoint_disk_bytes
    from peftstudio.plan.architecture import architecture_of, base_parameters

    weights = 2 * base_parameters(architecture_of(config))
    checkpoints = (checkpoint_disk_bytes(config) or (0, 0))[1]
    return max(64, math.ceil((1.2 * weights + checkpoints) / GB) + DISK_HEADROOM_GB)


def _source_checkout() -> Path | None:
    """The peftstudio source tree when running from a checkout (installed on the remote from it)."""
    import peftstudio

    root = Path(peftstudio.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "peftstudio").is_dir() else None


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("peftstudio")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def _extras(config) -> list[str]:
    from peftstudio.plan.memory import quantization_of

    if quantization_of(config) == "none":
        return []
    import importlib.metadata

    try:
        return [f"bitsandbytes=={importlib.metadata.version('bitsandbytes')}"]
    except importlib.metadata.PackageNotFoundError:
        return ["bitsandbytes"]
