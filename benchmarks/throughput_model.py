"""The CPU time model against finished runs: for each run dir given, the non-padding tokens/s that
its plan predicted (plan/step_probe.py: a micro-batch step of the run's model shape timed on
this CPU when the plan was made, read back from the probe cache; measured now if the cache lost
it) next to the median tokens/s the run measured
(metrics.jsonl, first log excluded), and the error. Target: within 25 %.

    PYTHONPATH=src python benchmarks/throughput_model.py RUN_OUTPUT_DIR [RUN_OUTPUT_DIR ...]

The embedded default run and the benchmark model's run, both in this one invocation:

    PYTHONPATH=$PWD/src python benchmarks/throughput_model.py --run-both [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def predicted_and_measured(output_dir: Path) -> tuple[float, float, float, float, str]:
    """(predicted and measured non-padding tokens/s, predicted and measured seconds a step, the
    basis). Tokens/s compares SFT runs; the step time any objective (a DPO run's logged tokens
    count chosen and rejected, the plan's one sequence a pair)."""
    from peftstudio.plan.cost import cpu_basis, workload
    from peftstudio.plan.runs import read_run
    from peftstudio.plan.step_probe import cpu_step_timing

    record = read_run(output_dir, require_plan=True)
    plan, config = record.plan, record.plan.config
    rates = [r["tokens_per_second"] for r in record.metrics if r.get("tokens_per_second")][1:]
    work = workload(plan)
    step = cpu_step_timing(config, plan.hardware, config.training.micro_batch_size, work.tokens_per_sequence,
                           plan.data.mean_tokens)
    if step is None:
        raise SystemExit(f"{output_dir}: not a run the CPU step probe times (plan/step_probe.py)")
    step_times = [r["step_time"] for r in record.metrics if r.get("step_time")][1:]
    return (step.tokens_per_second * work.useful_share, statistics.median(rates), step.seconds, statistics.median(step_times),
            cpu_basis(step, config))


def run_both(workdir: Path) -> list[Path]:
    """The embedded default run (`peftstudio train`, no arguments) and the benchmark model's
    (benchmarks/workload.py, 96 rows, micro-batch 8), one after the other; their output dirs."""
    from throughput import subprocess_env
    from workload import build_dataset, build_model

    embedded = workdir / "embedded"
    model, data = build_model(workdir / "model"), build_dataset(workdir / "data.jsonl", rows=96)
    runs = {embedded: [], workdir / "benchmark": [f"model.name_or_path={model}", f"data.path={data}",
                                                  "data.validation_split=0", "training.micro_batch_size=8",
                                                  "training.num_batches=12", "training.log_interval_steps=3",
                                                  "training.max_seq_length=512"]}
    for out, overrides in runs.items():
        command = [sys.executable, "-m", "peftstudio", "train", *overrides, f"training.output_dir={out / 'outputs'}",
                   f"training.checkpoint_dir={out / 'checkpoints'}", "training.resume=never"]
        completed = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=subprocess_env())
        if completed.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}")
    return [out / "outputs" for out in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--run-both", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    runs = list(args.runs)
    if args.run_both:
        runs += run_both(args.workdir or Path(tempfile.mkdtemp(prefix="peftstudio-throughput-model-")))
    for output_dir in runs:
        predicted, measured, predicted_step, measured_step, basis = predicted_and_measured(output_dir)
        print(f"{output_dir}: predicted {predicted:7.0f} tokens/s, measured {measured:7.0f} "
              f"({predicted / measured - 1:+.0%}); a step predicted {predicted_step * 1e3:.0f} ms, measured "
              f"{measured_step * 1e3:.0f} ms (speed {measured_step / predicted_step - 1:+.0%}); {basis}")


if __name__ == "__main__":
    main()
