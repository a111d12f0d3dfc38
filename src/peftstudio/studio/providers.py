"""Cloud GPU targets and their time/cost, read from the ops price model when this build has it.

The studio holds no prices of its own: without the ops module the compute step offers this
machine only and the cost panel says the price model is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

from peftstudio.errors import Problem, UserError
from peftstudio.plan.hardware import HardwareProfile


def _ops():
    try:
        return importlib.import_module("peftstudio.launch.costs")
    except ImportError:
        return None


def provider_targets() -> list[dict[str, Any]]:
    """[{provider, gpu, memory_bytes, price_per_hour}] from the shipped price file."""
    ops = _ops()
    if ops is None:
        return []
    return [dict(target) for target in ops.studio_targets()]


def target_hardware(provider: str, gpu: str | None, local: HardwareProfile) -> HardwareProfile:
    """The hardware a plan is checked against: this machine, or the chosen cloud GPU."""
    if provider == "local":
        return local
    for target in provider_targets():
        if target["provider"] == provider and target["gpu"] == gpu:
            return target["hardware"]
    raise UserError(Problem("compute", f"unknown provider/GPU {provider}/{gpu}",
                            "pick local, or a provider and GPU type from the list"))


def cost_estimate(plan, provider: str, gpu: str | None) -> dict[str, Any]:
    ops = _ops()
    if ops is None:
        return {"available": False, "reason": "the time and cost model (ops: launch/costs) is not in this build"}
    return {"available": True, **ops.estimate_cost(plan, provider, gpu)}
