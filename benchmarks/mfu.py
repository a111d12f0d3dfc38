"""MFU: the training FLOP/s `peftstudio train` achieves (defaults, auto resolution) over the
dense matmul peak of the same machine, both measured in this one invocation. Target on CPU:
>= 35% of the peak of the precision the run actually computes in.

    PYTHONPATH=src python benchmarks/mfu.py [--micro-batch 8] [--rows 192]

FLOPs per trained token, LoRA on a frozen base:
    4 N            forward (2N) and the backward through the frozen weights (2N: input
                   gradients only, frozen weights get none); N = matmul weights, lm_head
                   included, embedding lookup excluded
  + 6 N_lora       forward, input and weight gradients of the adapters
  + attention      6 · layers · heads · head_dim · n per token of a length-n sample (causal
                   QK^T and AV, forward + backward), averaged over the data's lengths
Useful tokens only: padding a run computes on is not counted, so padding waste shows up
as lost MFU.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from peftstudio.plan.runs import read_run

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import peftstudio_run  # noqa: E402
from workload import prepare  # noqa: E402

TARGET = 0.35


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 8) -> float:
    """Best FLOP/s of a dense size³ matmul in `dtype_name` on this machine, all threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    return 2 * size**3 / _best_matmul_seconds(size, size, size, dtype, repeats)


def _best_matmul_seconds(rows: int, inner: int, cols: int, dtype, repeats: int) -> float:
    """Best of `repeats` timings of one (rows x inner) @ (inner x cols) matmul, after a warm-up."""
    import torch

    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def shape_rate(model_dir: Path, tokens: int, dtype_name: str, repeats: int = 5) -> float:
    """FLOP/s of the frozen matmuls one step of this model runs, at their own shapes: for every
    linear layer (head included) a forward (tokens x in @ in x out) and an input gradient
    (tokens x out @ out x in), each timed best of `repeats`, FLOPs summed over time summed.
    The ceiling a step's matmuls could reach here, whatever else the step does."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    flops = seconds = 0.0
    for fan_in, fan_out in set(shapes):
        count = shapes.count((fan_in, fan_out))
        for a_cols, b_cols in ((fan_in, fan_out), (fan_out, fan_in)):
            flops += count * 2 * tokens * a_cols * b_cols
            seconds += count * _best_matmul_seconds(tokens, a_cols, b_cols, dtype, repeats)
    return flops / seconds


def flops_per_token(model_dir: Path, data: Path, max_len: int, lora_rank: int = 16) -> tuple[float, dict]:
    """Training FLOPs per non-padding token for this model, LoRA rank and data (see module doc)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from peftstudio.data.prepare import prepare_data
    from peftstudio.config.schema import DataSettings

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    matmul = sum(m.weight.numel() for m in linears)
    adapters = [m for m in linears if m is not model.lm_head]  # all-linear: every projection, not the head
    lora = sum(lora_rank * (m.in_features + m.out_features) for m in adapters)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = prepare_data(DataSettings(path=str(data), validation_split=0.0)).train_rows
    lengths = [min(len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                     return_dict=False)), max_len) for r in rows]
    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    mean_context = sum(n * n for n in lengths) / sum(lengths)  # a token of a length-n sample attends ~n/2 back
    attention = 6 * config.num_hidden_layers * config.num_attention_heads * head_dim * mean_context
    parts = {"matmul_params": matmul, "lora_params": lora, "attention_per_token": attention}
    return 4 * matmul + 6 * lora + attention, parts


def main() -> None:
    args, workdir, model, data = prepare(__doc__.split("\n\n")[0], "mfu")
    peaks = {name: matmul_peak(name) for name in ("float32", "bfloat16")}
    run = peftstudio_run(model, data, workdir, args.micro_batch, math.ceil(args.rows / args.micro_batch),
                         args.max_seq_length, args.log_interval)
    # The machine may be busier at one moment than another: take each peak's best over both measurements.
    peaks = {name: max(peak, matmul_peak(name)) for name, peak in peaks.items()}
    per_token, parts = flops_per_token(model, data, args.max_seq_length)
    precision = read_run(workdir / "peftstudio/outputs", require_plan=True).config.training.precision
    achieved = run["tokens"] / run["seconds"] * per_token
    used = "bfloat16" if precision == "bf16" else "float32"
    print(f"model     {parts['matmul_params'] / 1e6:.1f}M matmul weights, {parts['lora_params'] / 1e6:.2f}M LoRA; "
          f"attention {parts['attention_per_token'] / 1e6:.1f} MFLOP/token; {per_token / 1e6:.1f} MFLOP per token in all")
    print(f"peak      dense matmul fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    print(f"achieved  {achieved / 1e9:.1f} GFLOP/s ({run['tokens'] / run['seconds']:.1f} tokens/s, precision {precision})")
    tokens = round(run["tokens"] / (run["steps"] - args.log_interval) / 1) if run["steps"] > args.log_interval else 512
    at_shapes = {name: shape_rate(model, tokens, name) for name in ("float32", "bfloat16")}
    print(f"ceiling   the model's own matmul shapes at ~{tokens} tokens per micro-batch: fp32 "
          f"{at_shapes['float32'] / 1e9:.1f} GFLOP/s ({at_shapes['float32'] / peaks['float32']:.0%} of its peak), bf16 "
          f"{at_shapes['bfloat16'] / 1e9:.1f} GFLOP/s ({at_shapes['bfloat16'] / peaks['bfloat16']:.0%} of its peak)")
    mfu = achieved / peaks[used]
    print(f"MFU       {mfu:.1%} of the {used} peak ({achieved / peaks['float32']:.1%} of the fp32 peak); "
          f"target >= {TARGET:.0%}: {'met' if mfu >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
