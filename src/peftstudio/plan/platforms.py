"""Which platform preset, precision, attention and accelerate config suit a machine, with the
reason for each. `detect` prints these (see `plan.recommend`); `platform=auto` composes the run
with the same preset, exactly as `platform=NAME` would."""

from __future__ import annotations

from pathlib import Path

from peftstudio.config.compose import RANK_AUTO, Composition, Origin
from peftstudio.config.schema import RunConfig
from peftstudio.config.validate import load_config
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.units import GIB

# Preset by GPU name first (the name is the surest sign), then by memory class for GPUs
# without a preset of their own; smaller or bf16-less GPUs get every value resolved directly.
PRESETS_BY_NAME = (("H100", "h100"), ("H200", "h100"), ("A100", "a100"), ("4090", "rtx4090"))
PRESETS_BY_MEMORY = ((70, "h100"), (36, "a100"), (20, "rtx4090"))
NO_PRESET = "none"


def recommend_platform(hardware: HardwareProfile) -> tuple[str, str]:
    """The platform preset for `hardware` and why ("none" when no preset suits it)."""
    if hardware.accelerator == "cpu":
        return "cpu", "no CUDA or MPS accelerator found"
    memory_gib = hardware.device_memory / GIB
    if hardware.accelerator == "mps" and hardware.gpu_bf16:
        return "m4", f"Apple GPU (MPS) with {memory_gib:.0f} GiB of unified memory"
    if hardware.accelerator == "mps":
        return NO_PRESET, ("Apple GPU without bfloat16 (macOS before 14), unlike the m4 preset's: "
                           "each setting is resolved for it directly")
    name = hardware.device_names[0] if hardware.device_names else "GPU"
    for marker, preset in PRESETS_BY_NAME:
        if marker in name:
            return preset, f"{name} ({memory_gib:.0f} GiB) is a {marker}-class GPU"
    if hardware.gpu_bf16:
        for minimum, preset in PRESETS_BY_MEMORY:
            if memory_gib >= minimum:
                return preset, f"{name} has {memory_gib:.0f} GiB and bf16, like the {preset} preset's GPU"
    bf16 = "bf16" if hardware.gpu_bf16 else "no bf16"
    return NO_PRESET, f"no preset fits {name} ({memory_gib:.0f} GiB, {bf16}): each setting is resolved for it directly"


def compose_for_platform(requested: RunConfig, composition: Composition, overrides: list[str] | None,
                         config_file: Path | None, hardware: HardwareProfile) -> tuple[RunConfig, Composition]:
    """The run as composed for `hardware`: `requested` as it is unless it asks for
    `platform=auto`; then composed again as if the user had selected the preset recommended for
    `hardware`, so the preset's values apply and the user file and overrides still outrank them.
    The platform key's origin is `auto`, with the recommendation's reason. When no preset suits
    the machine, the run stays as asked and resolution picks each value (and gives the reason)."""
    if requested.platform != "auto":
        return requested, composition
    preset, reason = recommend_platform(hardware)
    if preset == NO_PRESET:
        return requested, composition
    config, composition = load_config([*(overrides or []), f"platform={preset}"], config_file)
    composition.origins["platform"] = Origin(RANK_AUTO, reason)
    return config, composition


def recommend_accelerate_config(hardware: HardwareProfile) -> tuple[str, str]:
    """The accelerate config name (`peftstudio accelerate-config NAME`) for `hardware`."""
    if hardware.accelerator == "cuda" and hardware.device_count > 1:
        return "multi_gpu", f"{hardware.device_count} GPUs: data-parallel training, one process per GPU"
    if hardware.accelerator == "cuda":
        return "single_gpu", "one GPU: a single process"
    if hardware.accelerator == "mps":
        return "single_gpu", "one Apple GPU: a single process (MPS has no multi-process backend)"
    return "cpu", "no accelerator: a single CPU process"
