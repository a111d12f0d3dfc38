"""Seconds per optimizer step of every adapter method on the embedded tiny model, through the
real training path (`api.train`), with LoRA measured in the same run as the baseline.

    PYTHONPATH=src python benchmarks/method_step_time.py [--steps 8] [--micro-batch 8]

Prints one line per method: median step time (first step excluded: warm-up) and the ratio to
LoRA's. Runs on whatever device `device=auto` resolves to.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path

METHODS = {
    "lora": ["peft=lora"],
    "dora": ["peft=dora"],
    "rslora": ["peft=rslora"],
    "pissa": ["peft=pissa"],
    "olora": ["peft=lora", "peft.init=olora"],
    "qlora": ["peft=qlora"],
    "qdora": ["peft=qdora"],
    "qlora+loftq": ["peft=qlora", "peft.init=loftq"],
    "qlora-int8": ["peft=qlora", "peft.quantization=int8", "peft.double_quant=false"],
}


def step_times(overrides: list[str], steps: int, micro_batch: int) -> list[float]:
    from rich.console import Console

    from peftstudio import api
    from peftstudio.track.metrics import read_metrics

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        api.train([*overrides, f"training.num_batches={steps}", f"training.save_interval_steps={steps}",
                   f"training.eval_interval_steps={steps}", "training.log_interval_steps=1",
                   f"training.micro_batch_size={micro_batch}", "training.max_seq_length=64",
                   "data.max_samples=200", f"training.output_dir={root / 'out'}",
                   f"training.checkpoint_dir={root / 'ckpts'}"], console=Console(file=io.StringIO()))
        records = read_metrics(root / "out/metrics.jsonl")
    # The final step also evaluates and saves inside its window: leave it out with the first.
    return [r["step_time"] for r in records if "loss" in r and 1 < r["step"] < steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=2, help="passes over all methods, interleaved against drift")
    args = parser.parse_args()
    names = args.methods.split(",")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name] += step_times(METHODS[name], args.steps, args.micro_batch)
    baseline = statistics.median(times["lora"]) if "lora" in times else None
    print(f"{'method':<14}{'s/step (median)':>16}{'vs lora':>9}   ({args.rounds} x {args.steps} steps, "
          f"micro-batch {args.micro_batch}, seq 64)")
    for name in names:
        median = statistics.median(times[name])
        ratio = f"{median / baseline:.2f}x" if baseline else "-"
        print(f"{name:<14}{median:>16.4f}{ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
