"""Estimator: peftstudio's predicted peak training memory (plan.memory.estimate_memory) next to
the peak `torch.cuda.max_memory_allocated` measures in real `peftstudio train` runs, for a
matrix of (model size, method, sequence length, micro-batch, gradient checkpointing). Target:
every prediction within 10% of the measurement. GPU only: without CUDA it says so and exits.

    PYTHONPATH=src python benchmarks/estimator.py [--quick] [--plan-only]

The models are real, randomly initialised (no download) from preset-like architectures: a
160M Llama, Gemma 3 270M's own architecture, and a Llama 3.2 1B shape. Every training sample
is longer than max_seq_length, so every micro-batch is full: the worst case the estimator
predicts. Each case is a separate `peftstudio train` process of 3 steps; its metrics.jsonl
records max_memory_allocated after each logged step. The comparison uses the estimate without
the framework overhead (`tensor_bytes`), which max_memory_allocated does not see.
`--plan-only` prints the predictions alone (runs anywhere, checks the matrix composes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from peftstudio.units import GIB

TOLERANCE = 0.10
MODELS = {
    "llama-160m": dict(model_type="llama", hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                       num_attention_heads=12, num_key_value_heads=4, head_dim=64, vocab_size=32000,
                       tie_word_embeddings=False),
    "gemma3-270m": dict(model_type="gemma3_text", hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                        tie_word_embeddings=True),
    "llama-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                     tie_word_embeddings=True),
}
METHODS = ("lora", "qlora", "dora")
SEQ_LENS = (512, 2048)
MICRO_BATCHES = (1, 4)
CHECKPOINTING = ("off", "on")


def build_model(name: str, directory: Path) -> Path:
    """A randomly initialised model of architecture `name`, with peftstudio's embedded tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from peftstudio.model.embedded import ensure_embedded_model

    if (directory / "config.json").is_file():
        return directory
    spec = dict(MODELS[name])
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    config = AutoConfig.for_model(spec.pop("model_type"), max_position_embeddings=4096,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **spec)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_long_rows(path: Path, rows: int = 64) -> Path:
    """Instruction rows far longer than the longest sequence tested (every sample truncated)."""
    from peftstudio.data.sample import generate_background_text

    text = generate_background_text(count=rows * 400, seed=7)
    records = [{"instruction": "Continue the notes.", "input": " ".join(text[i * 400:i * 400 + 200]),
                "output": " ".join(text[i * 400 + 200:(i + 1) * 400])} for i in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def case_overrides(model_dir: Path, data: Path, run_dir: Path, method: str, seq: int, batch: int,
                   checkpointing: str) -> list[str]:
    # Naming the model sets the default preset aside, so the estimate reads this config.json.
    return [f"model.name_or_path={model_dir}", f"data.path={data}",
            "data.validation_split=0", "training.loss_on=all", f"peft={method}",
            f"training.max_seq_length={seq}", f"training.micro_batch_size={batch}",
            "training.gradient_accumulation_steps=1", f"training.gradient_checkpointing={checkpointing}",
            "training.packing=off", "training.num_batches=3", "training.log_interval_steps=1",
            "training.save_interval_steps=1000", f"training.output_dir={run_dir / 'outputs'}",
            f"training.checkpoint_dir={run_dir / 'checkpoints'}", "training.resume=never"]


def predicted_bytes(overrides: list[str], batch: int, seq: int) -> int:
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.pipeline import make_plan

    plan = make_plan(overrides)
    return estimate_memory(plan.config, micro_batch_size=batch, seq_len=seq).tensor_bytes


def measured_bytes(overrides: list[str], run_dir: Path) -> int:
    completed = subprocess.run([sys.executable, "-m", "peftstudio", "train", *overrides], capture_output=True,
                               text=True)
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed")
    records = [json.loads(line) for line in (run_dir / "outputs/metrics.jsonl").read_text().splitlines()]
    return max(r["memory_peak"] for r in records if "memory_peak" in r)


def matrix(quick: bool):
    models = ("llama-160m", "gemma3-270m") if quick else tuple(MODELS)
    return itertools.product(models, METHODS, SEQ_LENS, MICRO_BATCHES, CHECKPOINTING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller models only")
    parser.add_argument("--plan-only", action="store_true", help="predictions only, no training (runs without a GPU)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.plan_only:
        print("estimator benchmark skipped: no CUDA GPU here (it compares against torch.cuda.max_memory_allocated). "
              "Use --plan-only to print the predictions alone.")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="peftstudio-estimator-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = build_long_rows(workdir / "long.jsonl")
    print(f"{'model':12s} {'method':6s} {'seq':>5s} {'mb':>3s} {'ckpt':4s} {'predicted':>10s} {'measured':>10s} {'ratio':>6s}")
    worst = 0.0
    for name, method, seq, batch, checkpointing in matrix(args.quick):
        model_dir = build_model(name, workdir / name)
        run_dir = workdir / "runs" / f"{name}-{method}-{seq}-{batch}-{checkpointing}"
        overrides = case_overrides(model_dir, data, run_dir, method, seq, batch, checkpointing)
        predicted = predicted_bytes(overrides, batch, seq)
        row = f"{name:12s} {method:6s} {seq:5d} {batch:3d} {checkpointing:4s} {predicted / GIB:9.2f}G"
        if args.plan_only:
            print(row)
            continue
        try:
            measured = measured_bytes(overrides, run_dir)
        except RuntimeError as error:
            print(f"{row} {'failed':>10s}  {error}")
            continue
        worst = max(worst, abs(predicted / measured - 1))
        print(f"{row} {measured / GIB:9.2f}G {predicted / measured:6.3f}")
    if not args.plan_only:
        print(f"worst deviation {worst:.1%} (target within {TOLERANCE:.0%}: {'met' if worst <= TOLERANCE else 'NOT met'})")


if __name__ == "__main__":
    main()
