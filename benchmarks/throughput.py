"""Throughput: non-padding tokens per second of `peftstudio train` (defaults, every `auto`
resolved for this machine) against a plain TRL SFTTrainer run with TRL's defaults for padding
and packing (fp32, no gradient checkpointing), on the same ~26M-parameter Llama, the same
variable-length instruction rows, the same micro-batch and the same number of steps (one
epoch, so both see exactly the same tokens). Both runs are measured in this one invocation;
the ratio is the figure. Target on CPU: >= 2.5x.

    PYTHONPATH=src python benchmarks/throughput.py [--micro-batch 8] [--rows 192]

Tokens and seconds are taken after the first logging window (warm-up excluded), the same way
for both runs. Each run is a separate process, started one after the other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import parameter_count, prepare  # noqa: E402

TARGET = 2.5  # issue 16


def subprocess_env() -> dict:
    """This environment with PYTHONPATH made absolute: the runs start in the work dir, where a
    relative `src` would name nothing and the installed peftstudio would run instead."""
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def peftstudio_run(model: Path, data: Path, workdir: Path, micro_batch: int, steps: int, max_len: int,
                   log_interval: int) -> dict:
    """`peftstudio train` as a user types it; the figures come from its metrics.jsonl."""
    out = workdir / "peftstudio"
    command = [sys.executable, "-m", "peftstudio", "train", f"model.name_or_path={model}",
               f"data.path={data}", "data.validation_split=0", f"training.micro_batch_size={micro_batch}",
               f"training.num_batches={steps}",
               f"training.max_seq_length={max_len}", f"training.log_interval_steps={log_interval}",
               f"training.save_interval_steps={steps}", f"training.output_dir={out / 'outputs'}",
               f"training.checkpoint_dir={out / 'checkpoints'}", "training.resume=never"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=subprocess_env())
    if completed.returncode != 0:
        raise SystemExit(f"peftstudio train failed:\n{completed.stdout}\n{completed.stderr}")
    records = [json.loads(line) for line in (out / "outputs/metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "loss" in r]
    first, later = windows[0], windows[1:]
    seconds = sum(r["step_time"] * (r["step"] - prev["step"]) for prev, r in zip(windows, later))
    resolved = [line for line in completed.stdout.splitlines() if line.startswith(("auto ", "kernels ", "time "))]
    return {"tokens": later[-1]["tokens_seen"] - first["tokens_seen"], "seconds": seconds,
            "steps": later[-1]["step"], "final_loss": later[-1]["loss"], "resolved": resolved}


def trl_run(model: Path, data: Path, workdir: Path, micro_batch: int, steps: int, max_len: int,
            log_interval: int) -> dict:
    command = [sys.executable, str(Path(__file__).with_name("trl_baseline.py")), "--model", str(model),
               "--data", str(data), "--output", str(workdir / "trl"), "--micro-batch", str(micro_batch),
               "--steps", str(steps), "--max-seq-length", str(max_len), "--log-interval", str(log_interval)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=workdir, env=subprocess_env())
    if completed.returncode != 0:
        raise SystemExit(f"TRL baseline failed:\n{completed.stdout}\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    args, workdir, model, data = prepare(__doc__.split("\n\n")[0], "throughput")
    steps = math.ceil(args.rows / args.micro_batch)
    shape = (model, data, workdir, args.micro_batch, steps, args.max_seq_length, args.log_interval)
    print(f"workload  Llama {parameter_count(model) / 1e6:.1f}M params, {args.rows} rows of widely varying length, "
          f"micro-batch {args.micro_batch}, {steps} steps (one epoch), max_seq_length {args.max_seq_length}")
    baseline = trl_run(*shape)
    studio = peftstudio_run(*shape)
    for line in studio["resolved"]:
        print(f"peftstudio {line}")
    for name, run in (("TRL SFTTrainer (defaults, fp32)", baseline), ("peftstudio train (auto)", studio)):
        print(f"{name:34s} {run['tokens'] / run['seconds']:8.1f} non-padding tokens/s "
              f"({run['tokens']} tokens in {run['seconds']:.1f} s; final loss {run['final_loss']:.4f})")
    ratio = (studio["tokens"] / studio["seconds"]) / (baseline["tokens"] / baseline["seconds"])
    print(f"ratio     {ratio:.2f}x  (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
