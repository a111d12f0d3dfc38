"""Does the planned run fit the device, and if not, which overrides would make it fit.

`plan` prints the estimate and, when the predicted peak exceeds one device's memory, a warning
with the numbers and each override (micro-batch, sequence length, gradient checkpointing,
4-bit QLoRA) that the estimator says would fit — with its own predicted peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peftstudio.config.schema import RunConfig
from peftstudio.errors import UserError
from peftstudio.plan.architecture import architecture_source
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.memory import MemoryEstimate, estimate_memory, largest_fitting_micro_batch, quantization_of
from peftstudio.plan.strategy_memory import STRATEGIES, recommend_strategy, strategy_estimate
from peftstudio.units import format_gib

SHORTEST_SUGGESTED_SEQUENCE = 256
RECOMMENDATION_CAP = 64


@dataclass(frozen=True)
class FitReport:
    estimate: MemoryEstimate | None
    device_bytes: int
    fitting_overrides: list[str] = field(default_factory=list)
    recommended_micro_batch: int | None = None
    warnings: list[str] = field(default_factory=list)
    architecture: str | None = None  # where the architecture numbers were read
    unknown: str | None = None  # why there is no estimate (then `fits` is null, never true)
    strategies: dict[str, dict] = field(default_factory=dict)  # per-device bytes under each strategy
    recommended_strategy: dict | None = None  # the simplest that fits, with the reason

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate.to_dict() if self.estimate else None,
            "device_bytes": self.device_bytes,
            "fits": self.estimate.fits(self.device_bytes) if self.estimate and self.device_bytes else None,
            "recommended_micro_batch": self.recommended_micro_batch,
            "fitting_overrides": self.fitting_overrides,
            "architecture": self.architecture,
            "unknown": self.unknown,
            "strategies": self.strategies,
            "recommended_strategy": self.recommended_strategy,
        }


def check_fit(config: RunConfig, hardware: HardwareProfile) -> FitReport:
    """The estimate of the resolved run on one device of `hardware`, and what fits if it does
    not. Without architecture numbers nothing can be predicted, and the report says so."""
    device = hardware.device_memory
    try:
        source = architecture_source(config)
        estimate = estimate_memory(config)
    except UserError as error:
        problem = error.problems[0]
        reason = f"{problem.message}; to give it: {problem.fix}" if problem.fix else problem.message
        return FitReport(None, device, warnings=[f"memory, time and cost unknown: {reason}"], unknown=reason)
    report = _fit(config, hardware, estimate)
    strategies, recommended = _strategies(config, estimate, device)
    return FitReport(report.estimate, device, report.fitting_overrides, report.recommended_micro_batch,
                     report.warnings, architecture=source, strategies=strategies, recommended_strategy=recommended)


def _strategies(config: RunConfig, estimate: MemoryEstimate, device: int) -> tuple[dict[str, dict], dict | None]:
    """Per-device bytes of the run under each strategy on training.num_processes devices, and
    the simplest strategy that fits one device of this machine's size."""
    processes = config.training.num_processes
    names = ("none", "deepspeed_zero3") if processes == 1 else STRATEGIES
    strategies = {name: strategy_estimate(config, estimate, name, processes).to_dict() for name in names}
    if not device:
        return strategies, None
    name, _, reason = recommend_strategy(config, estimate, processes, device)
    return strategies, {"strategy": name, "reason": reason}


def _fit(config: RunConfig, hardware: HardwareProfile, estimate: MemoryEstimate) -> FitReport:
    device = hardware.device_memory
    if not device:
        return FitReport(estimate, device)
    size, fitting = largest_fitting_micro_batch(config, hardware, cap=RECOMMENDATION_CAP)
    recommended = size if fitting is not None else None
    if estimate.fits(device):
        return FitReport(estimate, device, recommended_micro_batch=recommended)
    overrides = fitting_overrides(config, hardware, estimate)
    where = "GPU" if hardware.accelerator == "cuda" else ("unified memory" if hardware.accelerator == "mps" else "RAM")
    text = (f"predicted peak memory {format_gib(estimate.total_bytes)} exceeds the {format_gib(device)} {where} "
            f"(micro-batch {estimate.micro_batch_size}, sequence {estimate.seq_len}; largest parts: {_largest_parts(estimate)})")
    if overrides:
        text += "; would fit: " + "; ".join(overrides)
    else:
        text += "; no single override fits; " + combined_override(config, hardware, estimate)
    return FitReport(estimate, device, overrides, recommended, [text])


def fitting_overrides(config: RunConfig, hardware: HardwareProfile, estimate: MemoryEstimate) -> list[str]:
    """Each single override predicted to fit, with its predicted peak."""
    device, training = hardware.device_memory, config.training
    found = []
    size, fitting = largest_fitting_micro_batch(config, hardware, cap=max(estimate.micro_batch_size - 1, 1))
    if fitting is not None and size < estimate.micro_batch_size:
        accumulation = -(-estimate.micro_batch_size * training.gradient_accumulation_steps // size)
        found.append(f"training.micro_batch_size={size} training.gradient_accumulation_steps={accumulation} "
                     f"(same effective batch) → {format_gib(fitting.total_bytes)}")
    length = training.max_seq_length // 2
    while length >= SHORTEST_SUGGESTED_SEQUENCE:
        shorter = estimate_memory(config, seq_len=length, micro_batch_size=estimate.micro_batch_size)
        if shorter.fits(device):
            found.append(f"training.max_seq_length={length} → {format_gib(shorter.total_bytes)}")
            break
        length //= 2
    for label, variant in _variants(config):
        trial = estimate_memory(variant, micro_batch_size=estimate.micro_batch_size)
        if trial.fits(device):
            found.append(f"{label} → {format_gib(trial.total_bytes)}")
    return found


def combined_override(config: RunConfig, hardware: HardwareProfile, estimate: MemoryEstimate) -> str:
    """Every lever at once: QLoRA, checkpointing, micro-batch 1 (accumulation keeps the
    effective batch), then the longest sequence that fits."""
    variant, levers = config, []
    for label, changed in _variants(config):
        variant = _merge(variant, changed, label)
        levers.append(label)
    effective = estimate.micro_batch_size * config.training.gradient_accumulation_steps
    if estimate.micro_batch_size > 1:
        levers.append(f"training.micro_batch_size=1 training.gradient_accumulation_steps={effective}")
    length = config.training.max_seq_length
    while True:
        trial = estimate_memory(variant, micro_batch_size=1, seq_len=length)
        if trial.fits(hardware.device_memory) or length // 2 < SHORTEST_SUGGESTED_SEQUENCE:
            break
        length //= 2
    if length != config.training.max_seq_length:
        levers.append(f"training.max_seq_length={length}")
    verdict = "would fit" if trial.fits(hardware.device_memory) else "still does not fit: use a smaller model or a larger device"
    return f"all together ({' '.join(levers)}) → {format_gib(trial.total_bytes)}, {verdict}"


def _merge(config: RunConfig, changed: RunConfig, label: str) -> RunConfig:
    section = "training" if label.startswith("training.") else "peft"
    return config.model_copy(update={section: getattr(changed, section)})


def _variants(config: RunConfig) -> list[tuple[str, RunConfig]]:
    variants = []
    training = config.training
    if training.gradient_checkpointing != "on":
        variants.append(("training.gradient_checkpointing=on",
                         config.model_copy(update={"training": training.model_copy(update={"gradient_checkpointing": "on"})})))
    quantized = _quantized(config)
    if quantized is not None:
        variants.append(("peft=qlora", quantized))
    return variants


def _quantized(config: RunConfig) -> RunConfig | None:
    """The run with 4-bit NF4 base weights (QLoRA), if it is not quantized already."""
    if quantization_of(config) != "none":
        return None
    peft = config.peft
    if "quantization" in type(peft).model_fields:
        return config.model_copy(update={"peft": peft.model_copy(update={"quantization": "nf4"})})
    # A schema without the quantization key yet: estimate through a copy that names QLoRA.
    return config.model_copy(update={"peft": peft.model_construct(**{**peft.model_dump(), "method": "qlora"})})


def _largest_parts(estimate: MemoryEstimate) -> str:
    parts = sorted(estimate.components.items(), key=lambda item: -item[1])[:3]
    return ", ".join(f"{name} {format_gib(value)}" for name, value in parts)
