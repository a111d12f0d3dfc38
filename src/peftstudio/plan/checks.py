"""Cross-field checks on a resolved config, before any weight or data download.

Every problem is collected; the caller raises them together. Errors stop the run; warnings
are printed by `plan` and saved in plan.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.config.schema import QUANTIZED_METHODS, RunConfig
from peftstudio.plan.evaluation import eval_problems
from peftstudio.plan.init_adapter import init_adapter_problems
from peftstudio.plan.objectives import objective_problems
from peftstudio.errors import Problem, UserError
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.settings import ProcessPlace


@dataclass
class Findings:
    errors: list[Problem] = field(default_factory=list)
    environment: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(config: RunConfig, hardware: HardwareProfile, optimizer_steps: int, validation_rows: int,
          place: ProcessPlace = ProcessPlace()) -> Findings:
    """Every cross-field check of a run planned in a process at `place` (by default a process
    of its own, not one a launcher started)."""
    findings = Findings()
    _check_method(config, findings)
    _check_quantization(config, findings)
    _check_loss_impl(config, findings)
    _check_device(config, hardware, findings)
    _check_quantization_device(config, hardware, findings)
    _check_optimizer_backend(config, hardware, findings)
    _check_distributed(config, hardware, place, findings)
    _check_schedule(config, optimizer_steps, validation_rows, findings)
    _check_model(config, findings)
    _check_paths(config, findings)
    _check_disk(config, hardware, findings)
    _check_trackers(config, findings)
    _warn_hyperparameters(config, findings)
    findings.errors += objective_problems(config)  # dpo / kto / grpo: plan/objectives.py
    findings.errors += init_adapter_problems(config)  # peft.init_adapter: plan/init_adapter.py
    return findings


def _check_method(config: RunConfig, findings: Findings) -> None:
    """peft.method names the method; the flags carry it out. They must agree."""
    peft = config.peft
    needs = {"dora": ("peft.use_dora", peft.use_dora), "qdora": ("peft.use_dora", peft.use_dora),
             "rslora": ("peft.use_rslora", peft.use_rslora), "pissa": ("peft.init", peft.init.startswith("pissa"))}
    if peft.method in needs and not needs[peft.method][1]:
        key = needs[peft.method][0]
        findings.errors.append(Problem(key, f"peft.method={peft.method} but {key}={getattr(peft, key[5:])!r}",
                                       f"use peft={peft.method} (the group sets both) or change peft.method"))
    if isinstance(peft.target_modules, list) and not peft.target_modules:
        findings.errors.append(Problem("peft.target_modules", "[] (no module to adapt: nothing would train)",
                                       "name the modules (e.g. [q_proj,v_proj]) or use all-linear"))
    if peft.use_dora and peft.method not in ("dora", "qdora"):
        findings.errors.append(Problem("peft.use_dora", f"true while peft.method={peft.method}",
                                       "use peft=dora (or peft=qdora on a 4-bit base)"))
    if peft.init.startswith("pissa") and peft.method != "pissa":
        findings.errors.append(Problem("peft.init", f"{peft.init} while peft.method={peft.method}", "use peft=pissa"))
    if peft.init == "olora" and peft.method not in ("lora", "rslora"):
        findings.errors.append(Problem("peft.init", f"olora while peft.method={peft.method}: OLoRA rewrites the base "
                                       "weights, which only plain LoRA / rsLoRA can convert back on save",
                                       "use peft=lora peft.init=olora"))
    if peft.init == "loftq" and peft.method != "qlora":
        findings.errors.append(Problem("peft.init", f"loftq while peft.method={peft.method}: LoftQ initialises the "
                                       "adapter from the 4-bit quantization error", "use peft=qlora peft.init=loftq"))


def _check_quantization(config: RunConfig, findings: Findings) -> None:
    """Quantized methods need a quantized base, and only they may have one."""
    peft = config.peft
    quantized = peft.method in QUANTIZED_METHODS
    if quantized and peft.quantization == "none":
        findings.errors.append(Problem("peft.quantization", f"none while peft.method={peft.method}",
                                       f"use peft={peft.method} (sets nf4), or peft.quantization=nf4|fp4|int8"))
    if not quantized and peft.quantization != "none":
        method = "qdora" if peft.use_dora else "qlora"
        findings.errors.append(Problem("peft.quantization", f"{peft.quantization} while peft.method={peft.method}",
                                       f"use peft={method} for a quantized base, or peft.quantization=none"))
    if peft.double_quant and peft.quantization not in ("nf4", "fp4"):
        findings.errors.append(Problem("peft.double_quant", f"true with peft.quantization={peft.quantization}: "
                                       "double quantization applies to 4-bit weights only",
                                       "use peft.double_quant=false, or peft.quantization=nf4"))
    if peft.init == "loftq" and peft.quantization not in ("nf4", "fp4"):
        findings.errors.append(Problem("peft.init", f"loftq with peft.quantization={peft.quantization}",
                                       "use peft.quantization=nf4 (LoftQ compensates 4-bit quantization)"))
    if peft.quantization == "int8" and peft.use_dora:
        findings.errors.append(Problem("peft.quantization", "int8 with DoRA: peft's DoRA supports 4-bit bases only",
                                       "use peft.quantization=nf4"))


def _check_loss_impl(config: RunConfig, findings: Findings) -> None:
    """TRL's fused head projects with lm_head's base weight: an adapter on the head would be skipped."""
    targets = config.peft.target_modules
    if config.training.loss_impl == "chunked" and isinstance(targets, list) and "lm_head" in targets:
        findings.errors.append(Problem("training.loss_impl", "chunked while peft.target_modules includes lm_head: the "
                                       "fused head reads the base weight and would skip the head's adapter",
                                       "set training.loss_impl=plain (or auto), or drop lm_head from the targets"))


def _check_device(config: RunConfig, hardware: HardwareProfile, findings: Findings) -> None:
    device, training = config.device, config.training
    if device != hardware.accelerator and device != "cpu":
        findings.environment.append(Problem("device", f"{device} requested but this machine has {hardware.accelerator} only",
                                            "use device=auto, or run on a machine with that accelerator"))
    if training.precision == "fp16" and device == "cpu":
        findings.errors.append(Problem("training.precision", "fp16 is not supported for training on CPU",
                                       "use training.precision=fp32 (or bf16 on a CPU with bf16 units)"))
    if training.precision == "bf16" and device == "cpu" and not hardware.cpu_bf16:
        findings.errors.append(Problem("training.precision", "bf16 on a CPU without bf16 units (avx512_bf16 / AMX) would be very slow",
                                       "use training.precision=fp32"))
    if training.precision == "bf16" and device == "cuda" and not hardware.gpu_bf16:
        findings.errors.append(Problem("training.precision", "this GPU has no bfloat16 support",
                                       "use training.precision=fp16 (loss scaling) or auto"))
    if training.attention == "flash_attention_2" and not (device == "cuda" and hardware.flash_attention_available):
        findings.environment.append(Problem("training.attention", "flash_attention_2 needs a CUDA GPU and the flash-attn package",
                                            "use training.attention=sdpa, or install flash-attn on a CUDA machine"))


def _check_optimizer_backend(config: RunConfig, hardware: HardwareProfile, findings: Findings) -> None:
    """The 8-bit and paged optimizers are bitsandbytes kernels."""
    name = config.optim.name
    if ("8bit" in name or name.startswith("paged_")) and not hardware.bitsandbytes_available:
        findings.environment.append(Problem("optim.name", f"{name} needs the bitsandbytes package, which is not installed",
                                            "pip install bitsandbytes, or use optim.name=adamw_torch"))


def _check_quantization_device(config: RunConfig, hardware: HardwareProfile, findings: Findings) -> None:
    """bitsandbytes must be installed and have kernels for the device the run resolved to."""
    peft, device = config.peft, config.device
    if peft.quantization == "none":
        return
    unquantized = "peft=dora" if peft.use_dora else "peft=lora"
    if not hardware.bitsandbytes_available:
        findings.environment.append(Problem("peft.quantization", f"{peft.quantization} needs the bitsandbytes package, "
                                            "which is not installed", f"pip install bitsandbytes, or use {unquantized}"))
    if device == "mps":
        findings.environment.append(Problem("peft.quantization", f"{peft.quantization}: bitsandbytes has no Apple GPU (MPS) "
                                            "kernels for training", f"use {unquantized} on MPS, or device=cpu"))
    if device == "cpu" and peft.compute_dtype == "fp16":
        findings.errors.append(Problem("peft.compute_dtype", "fp16 on CPU: bitsandbytes' CPU kernels compute in fp32 or bf16",
                                       "use peft.compute_dtype=auto"))
    architecture = config.model.architecture
    if device == "cpu" and architecture is not None and peft.quantization in ("nf4", "fp4"):
        widths = {architecture.hidden_size, architecture.intermediate_size,
                  architecture.num_kv_heads * (architecture.head_dim or architecture.hidden_size // architecture.num_heads)}
        odd = sorted(w for w in widths if w % 64)
        if odd:
            findings.errors.append(Problem("peft.quantization", f"{peft.quantization} on CPU: layer widths {odd} are not "
                                           "multiples of 64, which bitsandbytes' CPU 4-bit kernels need",
                                           f"use {unquantized} on this model, or train on a CUDA GPU"))
def _check_distributed(config: RunConfig, hardware: HardwareProfile, place: ProcessPlace, findings: Findings) -> None:
    from peftstudio.plan.distributed_checks import distributed_findings

    errors, environment, warnings = distributed_findings(config, hardware, place)
    findings.errors += errors
    findings.environment += environment
    findings.warnings += warnings


def _check_schedule(config: RunConfig, steps: int, validation_rows: int, findings: Findings) -> None:
    training = config.training
    if training.early_stopping_patience is not None and validation_rows == 0:
        findings.errors.append(Problem("training.early_stopping_patience", "needs evaluation, but there is no validation split",
                                       "set data.validation_split above 0, or training.early_stopping_patience=null"))
    if training.metric_for_best_model is not None and validation_rows == 0:
        findings.errors.append(Problem("training.metric_for_best_model", "needs evaluation, but there is no validation split",
                                       "set data.validation_split above 0"))
    findings.errors += eval_problems(config, validation_rows)  # eval.metrics, metric_for_best_model: plan/evaluation.py
    if validation_rows and training.eval_interval_steps > steps:
        findings.warnings.append(f"training.eval_interval_steps={training.eval_interval_steps} is longer than the run "
                                 f"({steps} steps): the only evaluation is the final one")
    if training.save_interval_steps > steps:
        findings.warnings.append(f"training.save_interval_steps={training.save_interval_steps} is longer than the run "
                                 f"({steps} steps): the only checkpoint is the final one")


def _check_model(config: RunConfig, findings: Findings) -> None:
    """Against the model's architecture, wherever it was found (no numbers: `plan` says the
    memory is unknown): the context length, and LoRA targets peft can resolve on this family."""
    from peftstudio.plan.architecture import architecture_of, layout_known, targeted_layers, uses_dora

    try:
        architecture = architecture_of(config)
    except UserError:
        return
    training, peft = config.training, config.peft
    if training.max_seq_length > architecture.max_position_embeddings:
        findings.warnings.append(f"training.max_seq_length={training.max_seq_length} exceeds the model's context "
                                 f"({architecture.max_position_embeddings}); quality beyond it is not expected")
    if not layout_known(architecture):
        findings.warnings.append(f"model_type {architecture.model_type!r}: parameter counts and memory assume a "
                                 "Llama-style block (q/k/v/o, gate/up/down projections) and may be off")
    try:
        layers = targeted_layers(architecture, peft)
    except UserError as error:
        findings.errors.extend(error.problems)
        return
    _warn_unquantized(config, architecture, findings)
    parameters = [layer.name for layer in layers if not layer.is_module]
    if uses_dora(peft) and parameters:
        findings.errors.append(Problem("peft.target_modules", f"DoRA cannot adapt {parameters} of this "
                                       f"{architecture.model_type} model: peft adapts them as parameters, without DoRA",
                                       "use peft=lora (or qlora), or target the attention only: "
                                       "peft.target_modules=[q_proj,k_proj,v_proj,o_proj]"))


def _warn_unquantized(config: RunConfig, architecture, findings: Findings) -> None:
    """bitsandbytes quantizes nn.Linear layers only: fused expert weights stay at compute precision."""
    from peftstudio.plan.architecture import linear_layers

    if config.peft.quantization == "none" and config.peft.method not in QUANTIZED_METHODS:
        return
    kept = sum(layer.per_model * layer.weight_count for layer in linear_layers(architecture)
               if not layer.is_module)
    if kept:
        findings.warnings.append(f"{kept / 1e9:.1f}B weights of this {architecture.model_type} model (its router and "
                                 "fused experts) are parameters, not nn.Linear layers: bitsandbytes leaves them at "
                                 "compute precision, and the memory estimate counts them so")


def _check_paths(config: RunConfig, findings: Findings) -> None:
    for key in ("output_dir", "checkpoint_dir"):
        path = Path(getattr(config.training, key)).expanduser()
        existing = next((p for p in (path, *path.parents) if _exists(p)), Path("."))
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            findings.errors.append(Problem(f"training.{key}", f"{path} cannot be created ({existing} is not a writable directory)",
                                           f"set training.{key} to a writable location"))
        elif (too_long := _too_long(path.absolute(), existing)) is not None:
            findings.errors.append(Problem(f"training.{key}", f"{path}: {too_long}",
                                           f"set training.{key} to a shorter path"))
    resume = config.training.resume
    if resume not in ("auto", "never") and not Path(resume).expanduser().is_dir():
        findings.errors.append(Problem("training.resume", f"checkpoint {resume} not found",
                                       "use auto, never, or the path of a checkpoint-N directory"))


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the filesystem: `_too_long` says so
        return False


# Room below a run dir for what the run writes there (checkpoint-N/.staging-step-N/file names).
_RUN_FILE_ROOM = 96


def _too_long(path: Path, existing: Path) -> str | None:
    """Why the filesystem would refuse `path` (or the files a run writes under it), or None."""
    try:
        name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    longest = max(path.parts, key=lambda part: len(part.encode()))
    if len(longest.encode()) > name_max:
        return f"the name {longest[:40]}… is {len(longest.encode())} bytes; this filesystem allows {name_max}"
    if len(str(path).encode()) + _RUN_FILE_ROOM > path_max:
        return (f"{len(str(path).encode())} bytes long; this filesystem allows {path_max} for a whole path, and the "
                f"run's files add up to {_RUN_FILE_ROOM} more")
    return None


def _check_disk(config: RunConfig, hardware: HardwareProfile, findings: Findings) -> None:
    """The most checkpoint space the run holds at once (kept checkpoints, one being written, the
    adapter) against the free disk planning measured (0: not measured, e.g. a fake profile)."""
    from peftstudio.plan.disk import checkpoint_disk_bytes
    from peftstudio.units import format_gib

    sizes = checkpoint_disk_bytes(config)
    free = hardware.disk_free_bytes
    if sizes is None or not free or sizes[1] <= free:
        return
    one, need = sizes
    findings.environment.append(Problem(
        "training.checkpoint_dir", f"the checkpoints need up to {format_gib(need, 2)} (keep "
        f"{config.training.save_total_limit} of {format_gib(one, 2)}, +1 being written, + the adapter) but "
        f"{format_gib(free, 2)} is free", "free disk space, lower training.save_total_limit, or move "
        "training.checkpoint_dir to a larger disk"))


def _check_trackers(config: RunConfig, findings: Findings) -> None:
    import importlib.util

    missing = []
    for key, package, pip_name in (("wandb", "wandb", "wandb"), ("mlflow", "mlflow", "mlflow-skinny"),
                                   ("comet", "comet_ml", "comet-ml"), ("trackio", "trackio", "trackio"),
                                   ("phoenix", "opentelemetry.exporter", "opentelemetry-exporter-otlp-proto-http")):
        if getattr(config.logging, key) and importlib.util.find_spec(package) is None:
            missing.append(key)
            findings.environment.append(Problem(f"logging.{key}", f"on, but the {package} package is not installed",
                                                f"pip install {pip_name}, or drop {key} from logging=[...]"))
    for key, reason in _unreachable_trackers(config, missing):
        if config.logging.on_error == "warn":
            findings.warnings.append(f"logging.{key}: {reason}; training goes on without it (logging.on_error=warn), "
                                     "metrics in metrics.jsonl")
        else:
            findings.environment.append(Problem(f"logging.{key}", reason,
                                                "start or fix the tracker (URI, credentials), drop it from logging=[...], "
                                                "or pass logging.on_error=warn to train on metrics.jsonl alone"))


def _unreachable_trackers(config: RunConfig, missing: list[str]) -> list[tuple[str, str]]:
    """(tracker, why) for each tracker server this run would log to that does not answer:
    checked with a short timeout, so an unreachable server fails the plan instead of hanging
    the run. A local store (MLflow's file store, W&B offline) needs no check."""
    from peftstudio.settings import wandb_variables
    from peftstudio.track.trackers import (check_mlflow_server, check_phoenix_collector, check_wandb_server,
                                           mlflow_server, wandb_mode)

    found = []
    server = mlflow_server(config.logging.mlflow_tracking_uri) if config.logging.mlflow else None
    if server and "mlflow" not in missing and (reason := check_mlflow_server(server)):
        found.append(("mlflow", reason))
    online = config.logging.wandb and wandb_mode(*wandb_variables())[0] == "online"
    if online and "wandb" not in missing and (reason := check_wandb_server()):
        found.append(("wandb", reason))
    if config.logging.phoenix and "phoenix" not in missing and \
            (reason := check_phoenix_collector(config.logging.phoenix_endpoint)):
        found.append(("phoenix", f"{reason}; a local Phoenix is `pip install arize-phoenix && phoenix serve`"))
    return found


def _warn_hyperparameters(config: RunConfig, findings: Findings) -> None:
    peft = config.peft
    if not peft.use_rslora and not (0.5 * peft.r <= peft.alpha <= 4 * peft.r):
        findings.warnings.append(f"peft.alpha={peft.alpha:g} is far from the usual 1-2 x r (r={peft.r}): "
                                 f"the adapter's scale is alpha/r = {peft.alpha / peft.r:.2f}")
