"""The throughput model against finished runs: for each run dir given, the tokens/s that
`plan` predicts on this machine (FLOPs per token from plan.throughput, this CPU's probed GFLOP/s
at the model's width in the run's precision, providers.yaml's CPU efficiency) next to the
median tokens/s the run measured (metrics.jsonl, first log excluded). Target: within 25 %.

    PYTHONPATH=src python benchmarks/throughput_model.py RUN_OUTPUT_DIR [RUN_OUTPUT_DIR ...]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path


def predicted_and_measured(output_dir: Path) -> tuple[float, float, str]:
    from peftstudio.plan.architecture import architecture_of
    from peftstudio.plan.hardware import detect
    from peftstudio.plan.prices import load_prices
    from peftstudio.plan.runs import read_run
    from peftstudio.plan.throughput import flops_per_token, probed_cpu_gflops, tokens_per_second

    record = read_run(output_dir, require_plan=True)
    config = record.plan.config
    rates = [r["tokens_per_second"] for r in record.metrics if r.get("tokens_per_second")][1:]
    # The mean length of a trained sample: what attention's per-token cost is taken at.
    seq = max(16, int(record.plan.data.mean_tokens or 128))
    width, fp32, bf16 = probed_cpu_gflops(detect(output_dir), architecture_of(config).hidden_size)
    gflops = bf16 if config.training.precision == "bf16" else fp32
    predicted = tokens_per_second(flops_per_token(config, seq), gflops / 1000, load_prices().efficiency.cpu)
    basis = f"{config.training.precision}, probe {gflops:g} GFLOP/s at width {width}"
    return predicted, statistics.median(rates), basis


def main() -> None:
    for argument in sys.argv[1:]:
        predicted, measured, basis = predicted_and_measured(Path(argument))
        print(f"{argument}: predicted {predicted:8.0f} tokens/s, measured {measured:8.0f} "
              f"({predicted / measured - 1:+.0%}; {basis})")


if __name__ == "__main__":
    main()
