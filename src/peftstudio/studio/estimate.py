"""The live estimate panel: memory (plan/memory.py), time and cost (the ops price model) for a
checked plan on a chosen compute target. The studio computes nothing itself: where a model is
missing from this build, the panel says so instead of guessing."""

from __future__ import annotations

import importlib
from typing import Any

from peftstudio.plan.hardware import HardwareProfile


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def device_memory(hardware: HardwareProfile) -> int:
    """Memory the run must fit in: the GPU's, or RAM on a CPU."""
    if hardware.device_memory_bytes:
        return hardware.device_memory_bytes[0]
    return hardware.ram_bytes


def memory_estimate(config, hardware: HardwareProfile) -> dict[str, Any]:
    """Breakdown, fit against the device, and the largest micro-batch that fits when it does not."""
    memory = _module("peftstudio.plan.memory")
    if memory is None:
        return {"available": False, "reason": "the memory estimator (plan/memory.py) is not in this build"}
    estimate = memory.estimate_memory(config, hardware=hardware)
    capacity = device_memory(hardware)
    result = {
        "available": True,
        "total_bytes": estimate.total_bytes,
        "components": dict(estimate.components),
        "total_parameters": estimate.total_parameters,
        "trainable_parameters": estimate.trainable_parameters,
        "device_bytes": capacity,
        "fits": estimate.fits(capacity) if capacity else None,
        "advice": [],
    }
    if capacity and not result["fits"]:
        result["advice"] = _advice(memory, config, hardware, capacity)
    return result


def _advice(memory, config, hardware: HardwareProfile, capacity: int) -> list[str]:
    advice = []
    micro = config.training.micro_batch_size
    while micro > 1:
        micro //= 2
        if memory.estimate_memory(config, micro_batch_size=micro, hardware=hardware).fits(capacity):
            accumulation = config.training.gradient_accumulation_steps * config.training.micro_batch_size // micro
            advice.append(f"training.micro_batch_size={micro} with training.gradient_accumulation_steps={accumulation} "
                          "fits and keeps the effective batch")
            break
    if config.training.gradient_checkpointing != "on":
        checkpointed = config.model_copy(deep=True)
        checkpointed.training.gradient_checkpointing = "on"
        if memory.estimate_memory(checkpointed, hardware=hardware).fits(capacity):
            advice.append("training.gradient_checkpointing=on fits (about 30% slower per step)")
    shorter = config.training.max_seq_length // 2
    if shorter >= 16 and memory.estimate_memory(config, seq_len=shorter, hardware=hardware).fits(capacity):
        advice.append(f"training.max_seq_length={shorter} fits (longer samples are truncated)")
    if not advice:
        advice.append("no single change fits: pick a GPU with more memory, a smaller model, or a quantized method")
    return advice
