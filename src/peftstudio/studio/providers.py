"""Compute targets (this machine, or a provider's GPU type) and the time/cost of a plan on
them, read from the CLI's price file and cost model (plan/prices.py, plan/cost.py): the
studio holds no prices of its own.
"""

from __future__ import annotations

from typing import Any

from peftstudio.errors import Problem, UserError
from peftstudio.plan.cost import cost_report, gpu_profile
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.prices import load_prices
from peftstudio.units import GIB

CHEAPEST_SHOWN = 3


def provider_targets() -> list[dict[str, Any]]:
    """Every provider × GPU type of the price file, with memory and US$ per GPU-hour."""
    prices = load_prices()
    return [{"provider": provider, "gpu": gpu, "memory_bytes": int(prices.gpus[gpu].memory_gib * GIB),
             "price_low": low, "price_high": high, "prices_updated": prices.updated.isoformat()}
            for provider, offers in prices.providers.items() for gpu, (low, high) in offers.items()]


def target_hardware(provider: str, gpu: str | None, local: HardwareProfile) -> HardwareProfile:
    """The hardware a plan is checked against: this machine, or one GPU of the chosen type."""
    if provider == "local":
        return local
    prices = load_prices()
    if gpu in prices.providers.get(provider, {}):
        spec = prices.gpus[gpu]
        return gpu_profile(gpu, spec.memory_gib, spec.bf16)
    raise UserError(Problem("compute", f"unknown provider/GPU {provider}/{gpu}",
                            "pick this machine, or a provider and GPU type from the list"))


def cost_estimate(plan, provider: str, gpu: str | None) -> dict[str, Any]:
    """Hours (and US$ on a rented GPU) of `plan`, with the cheapest GPUs that fit it. A CPU step
    is not timed here (the server may share the CPU with a running job): one `peftstudio plan`
    timed already is used, else the FLOP model."""
    report = cost_report(plan, time_cpu_step=False)
    cheapest = [{"provider": o.provider, "gpu": o.gpu, "hours": o.hours, "cost_low": o.cost_low,
                 "cost_high": o.cost_high} for o in report.options[:CHEAPEST_SHOWN]]
    common = {"cheapest": cheapest, "prices_updated": report.prices_updated,
              "assumptions": list(report.assumptions)}
    if provider == "local":
        local = report.local
        return {**common, "hours": local.hours, "tokens_per_second": local.tokens_per_second, "basis": local.basis,
                "cost_low": 0.0, "cost_high": 0.0, "fits": True}
    chosen = next((o for o in report.options if o.provider == provider and o.gpu == gpu), None)
    if chosen is None:
        return {**common, "hours": None, "fits": False, "basis": f"{provider}/{gpu} is too small for this run"}
    return {**common, "hours": chosen.hours, "tokens_per_second": chosen.tokens_per_second, "fits": True,
            "cost_low": chosen.cost_low, "cost_high": chosen.cost_high, "basis": "throughput model"}
