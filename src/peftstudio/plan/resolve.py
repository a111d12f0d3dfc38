"""Turn every `auto` into a concrete value and a one-line reason.

Resolution reads only its arguments (the validated config, a `HardwareProfile`, and what was
measured about the data), so a test can ask "what would an H100 get?" with a fake profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftstudio.config.schema import RunConfig
from peftstudio.plan.hardware import HardwareProfile

# Above this share of padding tokens, packing pays for itself.
PACKING_WASTE_THRESHOLD = 0.25


@dataclass(frozen=True)
class Resolution:
    config: RunConfig
    reasons: dict[str, str]


def resolve(config: RunConfig, hardware: HardwareProfile, padding_waste: float | None) -> Resolution:
    """A copy of `config` with no `auto` left, and the reason for each value chosen."""
    reasons: dict[str, str] = {}
    values = config.model_dump()
    for key, rule in RULES:
        section, _, name = key.rpartition(".")
        holder = values[section] if section else values
        if holder[name] == "auto":
            holder[name], reasons[key] = rule(values, hardware, padding_waste)
    return Resolution(RunConfig.model_validate(values), reasons)


def _device(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    if hardware.accelerator == "cuda":
        names = ", ".join(sorted(set(hardware.device_names)))
        return "cuda", f"{hardware.device_count} CUDA GPU(s) found: {names}"
    if hardware.accelerator == "mps":
        return "mps", "Apple GPU (MPS) found"
    return "cpu", "no CUDA or MPS accelerator found"


def _precision(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    device = values["device"]
    if device == "cuda" and hardware.gpu_bf16:
        return "bf16", "GPU supports bfloat16: same range as fp32, no loss scaling needed"
    if device == "cuda":
        return "fp16", ("GPU has no bfloat16: fp16 with loss scaling; fp16 can overflow to NaN loss — "
                        "if it does, lower optim.learning_rate or raise warmup")
    if device == "mps":
        return "fp32", "MPS: mixed precision is not enabled automatically on Apple GPUs"
    bf16_note = " (this CPU has bf16 units: training.precision=bf16 runs autocast, not validated for quality)" \
        if hardware.cpu_bf16 else ""
    return "fp32", f"CPU run: fp32 keeps results exact and reproducible{bf16_note}"


def _gradient_checkpointing(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    if values["device"] == "cpu":
        return "off", "CPU run: time, not memory, is the limit; recomputing activations costs ~30% per step"
    return "on", "accelerator run: trades ~30% step time for a large cut in activation memory; set off when memory allows"


def _attention(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    half = values["training"]["precision"] in ("bf16", "fp16")
    if values["device"] == "cuda" and hardware.flash_attention_available and half:
        return "flash_attention_2", "flash-attn is installed and the run is in half precision"
    if values["device"] == "cuda" and not hardware.flash_attention_available:
        return "sdpa", "flash-attn is not installed: PyTorch's fused scaled-dot-product attention"
    return "sdpa", "PyTorch's fused scaled-dot-product attention (flash-attn needs a CUDA GPU in half precision)"


def _packing(values: dict[str, Any], hardware: HardwareProfile, waste: float | None) -> tuple[str, str]:
    # Packing here is padding-free batching: a micro-batch's samples are concatenated into one
    # row with position_ids restarting at 0 per sample. transformers builds a block-diagonal
    # causal mask from those position_ids for sdpa and eager (masking_utils.
    # find_packed_sequence_indices) and flash_attention_2 runs them as separate varlen
    # sequences, so packed samples never attend to each other with any of the three.
    measured = f"{waste:.0%} of tokens would be padding at micro-batch {values['training']['micro_batch_size']}" \
        if waste is not None else "padding waste not measured"
    if waste is not None and waste > PACKING_WASTE_THRESHOLD:
        return "on", (f"{measured} (above {PACKING_WASTE_THRESHOLD:.0%}): samples are packed padding-free, kept apart "
                      f"by position_ids with {values['training']['attention']}")
    return "off", f"{measured} (at most {PACKING_WASTE_THRESHOLD:.0%}: not worth packing)"


RULES = (
    ("device", _device),
    ("training.precision", _precision),
    ("training.gradient_checkpointing", _gradient_checkpointing),
    ("training.attention", _attention),
    ("training.packing", _packing),
)
