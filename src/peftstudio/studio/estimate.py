"""The live estimate panel's memory part: the CLI's own estimator and fit check
(plan/memory.py, plan/fit.py) on the plan and the chosen compute target. The studio computes
nothing itself."""

from __future__ import annotations

from typing import Any

from peftstudio.plan.hardware import HardwareProfile


def memory_estimate(config, hardware: HardwareProfile) -> dict[str, Any]:
    """Breakdown, fit against one device (RAM on a CPU), and the overrides that would fit."""
    from peftstudio.plan.fit import check_fit

    report = check_fit(config, hardware)
    if report.estimate is None:
        return {"available": False, "reason": report.unknown or f"{config.model.name_or_path}: memory cannot be predicted"}
    estimate = report.estimate
    return {
        "available": True,
        "total_bytes": estimate.total_bytes,
        "components": dict(estimate.components),
        "total_parameters": estimate.total_parameters,
        "trainable_parameters": estimate.trainable_parameters,
        "micro_batch_size": estimate.micro_batch_size,
        "seq_len": estimate.seq_len,
        "device_bytes": report.device_bytes,
        "fits": estimate.fits(report.device_bytes) if report.device_bytes else None,
        "advice": list(report.fitting_overrides),
        "warnings": list(report.warnings),
        "recommended_micro_batch": report.recommended_micro_batch,
        "notes": list(estimate.notes),
    }
