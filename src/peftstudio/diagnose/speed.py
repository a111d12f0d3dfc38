"""A run's measured speed against what the throughput model predicts for its GPU."""

from __future__ import annotations

import statistics

from peftstudio.diagnose.evidence import RunEvidence


def predicted_tokens_per_second(evidence: RunEvidence) -> tuple[float, str] | None:
    """Non-padding tokens/s the throughput model predicts for this run on its CUDA GPU, and the
    GPU's name in the price file; None off CUDA or for a GPU the price file does not know."""
    from pydantic import ValidationError

    from peftstudio.errors import UserError
    from peftstudio.plan.cost import run_efficiency, workload
    from peftstudio.plan.prices import load_prices
    from peftstudio.plan.throughput import flops_per_token, tokens_per_second

    plan = evidence.plan
    if plan is None or plan.hardware.accelerator != "cuda" or not plan.hardware.device_names:
        return None
    config = plan.config
    try:
        prices = load_prices()
        gpu = prices.gpu_for_device(plan.hardware.device_names[0])
        if gpu is None:
            return None
        work = workload(plan)
        speed = tokens_per_second(flops_per_token(config, work.seq_len, work.images_per_sequence),
                                  prices.gpus[gpu].peak_tflops, run_efficiency(prices, config))
    except (ValidationError, UserError, ValueError, TypeError):
        return None
    return speed * work.useful_share, gpu


def measured_tokens_per_second(evidence: RunEvidence) -> float | None:
    """Median tokens/s over the run's logs after the first (warm-up)."""
    rates = [float(r["tokens_per_second"]) for r in evidence.train[1:] if r.get("tokens_per_second")]
    return statistics.median(rates) if rates else None
