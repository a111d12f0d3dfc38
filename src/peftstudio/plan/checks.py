"""Cross-field checks on a resolved config, before any weight or data download.

Every problem is collected; the caller raises them together. Errors stop the run; warnings
are printed by `plan` and saved in plan.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem
from peftstudio.plan.hardware import HardwareProfile


@dataclass
class Findings:
    errors: list[Problem] = field(default_factory=list)
    environment: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(config: RunConfig, hardware: HardwareProfile, optimizer_steps: int, validation_rows: int) -> Findings:
    findings = Findings()
    _check_method(config, findings)
    _check_device(config, hardware, findings)
    _check_distributed(config, hardware, findings)
    _check_schedule(config, optimizer_steps, validation_rows, findings)
    _check_paths(config, findings)
    _warn_hyperparameters(config, findings)
    return findings


def _check_method(config: RunConfig, findings: Findings) -> None:
    """peft.method names the method; the flags carry it out. They must agree."""
    peft = config.peft
    needs = {"dora": ("peft.use_dora", peft.use_dora), "rslora": ("peft.use_rslora", peft.use_rslora),
             "pissa": ("peft.init", peft.init.startswith("pissa"))}
    if peft.method in needs and not needs[peft.method][1]:
        key = needs[peft.method][0]
        findings.errors.append(Problem(key, f"peft.method={peft.method} but {key}={getattr(peft, key[5:])!r}",
                                       f"use peft={peft.method} (the group sets both) or change peft.method"))
    if peft.use_dora and peft.method != "dora":
        findings.errors.append(Problem("peft.use_dora", f"true while peft.method={peft.method}", "use peft=dora"))
    if peft.init.startswith("pissa") and peft.method != "pissa":
        findings.errors.append(Problem("peft.init", f"{peft.init} while peft.method={peft.method}", "use peft=pissa"))


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
    if training.packing == "on" and training.attention != "flash_attention_2":
        findings.errors.append(Problem("training.packing", f"on with attention={training.attention}: packed samples would attend to each other",
                                       "use training.packing=off, or attention=flash_attention_2 on a CUDA GPU"))


def _check_distributed(config: RunConfig, hardware: HardwareProfile, findings: Findings) -> None:
    from peftstudio.plan.distributed_checks import distributed_findings

    errors, environment, warnings = distributed_findings(config, hardware)
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
    if training.metric_for_best_model not in (None, "eval_loss", "loss", "eval_perplexity", "perplexity"):
        findings.errors.append(Problem("training.metric_for_best_model", f"{training.metric_for_best_model!r} is not a metric peftstudio computes",
                                       "use eval_loss"))
    if validation_rows and training.eval_interval_steps > steps:
        findings.warnings.append(f"training.eval_interval_steps={training.eval_interval_steps} is longer than the run "
                                 f"({steps} steps): the only evaluation is the final one")
    if training.save_interval_steps > steps:
        findings.warnings.append(f"training.save_interval_steps={training.save_interval_steps} is longer than the run "
                                 f"({steps} steps): the only checkpoint is the final one")
    architecture = config.model.architecture
    if architecture and training.max_seq_length > architecture.max_position_embeddings:
        findings.warnings.append(f"training.max_seq_length={training.max_seq_length} exceeds the model's context "
                                 f"({architecture.max_position_embeddings}); quality beyond it is not expected")


def _check_paths(config: RunConfig, findings: Findings) -> None:
    for key in ("output_dir", "checkpoint_dir"):
        path = Path(getattr(config.training, key)).expanduser()
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            findings.errors.append(Problem(f"training.{key}", f"{path} cannot be created ({existing} is not a writable directory)",
                                           f"set training.{key} to a writable location"))
    resume = config.training.resume
    if resume not in ("auto", "never") and not Path(resume).expanduser().is_dir():
        findings.errors.append(Problem("training.resume", f"checkpoint {resume} not found",
                                       "use auto, never, or the path of a checkpoint-N directory"))


def _warn_hyperparameters(config: RunConfig, findings: Findings) -> None:
    peft = config.peft
    if not peft.use_rslora and not (0.5 * peft.r <= peft.alpha <= 4 * peft.r):
        findings.warnings.append(f"peft.alpha={peft.alpha:g} is far from the usual 1-2 x r (r={peft.r}): "
                                 f"the adapter's scale is alpha/r = {peft.alpha / peft.r:.2f}")
