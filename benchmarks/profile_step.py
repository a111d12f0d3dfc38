"""Where a training step's time goes: torch.profiler over a few steps of the benchmark workload's
model (benchmarks/workload.py) trained the way `peftstudio train` trains it (LoRA r=16 on every
projection, fp32 adapters, padding-free packed micro-batches, AdamW), in the precision and with
the loss given on the command line.

    PYTHONPATH=src python benchmarks/profile_step.py [--precision bf16|fp32] [--loss plain|chunked]

Prints the operators by self CPU time and the share of the step in matmuls (aten::mm, addmm,
bmm, linear's kernels), attention, element-wise work and the rest.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import build_model  # noqa: E402

GROUPS = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::_weight_int4pack_mm"),
          "attention": ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::scaled_dot_product"),
          "casts and copies": ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous"),
          "optimizer": ("Optimizer.step", "aten::_foreach", "aten::addcdiv", "aten::lerp", "aten::sqrt")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--loss", choices=("plain", "chunked"), default="plain")
    parser.add_argument("--tokens", type=int, default=720, help="packed tokens per micro-batch (8 samples of ~90)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    directory = build_model(Path(tempfile.mkdtemp(prefix="profile-")) / "model")
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
    add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, base.config.vocab_size, (1, args.tokens))
    positions = torch.cat([torch.arange(args.tokens // 8)] * 8).unsqueeze(0)  # 8 packed samples

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            if args.loss == "chunked":
                loss = model(input_ids=ids, position_ids=positions, labels=ids, fused_lm_head=True).loss
            else:
                loss = model(input_ids=ids, position_ids=positions, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    shares = {name: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
              for name, prefixes in GROUPS.items()}
    shares["everything else (element-wise, norms, rotary, dispatch)"] = 1 - sum(shares.values())
    print(f"{args.precision}, {args.loss} loss: {total / args.steps / 1e3:.0f} ms of operator time per step of "
          f"{args.tokens} tokens")
    for name, share in shares.items():
        print(f"  {name:55s} {share:6.1%}")


if __name__ == "__main__":
    main()
