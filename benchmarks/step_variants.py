"""A/B of training-step variants on the benchmark workload (benchmarks/workload.py): the same
packed micro-batches of real variable-length rows, LoRA r=16 on every projection (dropout 0.05),
AdamW, each variant its own copy of the same model, steps alternating between variants so that
load from other processes falls on all of them alike. Prints each variant's median step time,
its tokens/s and its speed relative to the first variant, and the first-step losses (equal
across variants that compute the same thing; dropout variants differ by their random masks).

    PYTHONPATH=src python benchmarks/step_variants.py [--precision bf16] [--rounds 6] [--variants a,b,...]

Variants: stock (transformers sdpa + peft's nn.Dropout and input casts), masked (+ MaskedDropout),
nocast (+ keep_autocast_inputs: what train runs), nodrop (nocast with dropout 0: what the dropout
itself costs), threads1 (nocast on one thread), packed (nocast + each packed sample attending on its
own in fp32, sdpa_packed: what train runs where plan's attention probe chose it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import build_dataset, build_model  # noqa: E402

ALL = ("stock", "masked", "nocast", "nodrop", "threads1", "packed")


def packed_batches(model_dir: Path, data: Path, micro_batch: int, count: int):
    import torch
    from transformers import AutoTokenizer

    from peftstudio.config.schema import DataSettings
    from peftstudio.data.prepare import prepare_data

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = prepare_data(DataSettings(path=str(data), validation_split=0.0)).train_rows
    ids = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)[:512]
           for r in rows]
    batches = []
    for start in range(0, micro_batch * count, micro_batch):
        group = ids[start:start + micro_batch]
        flat = torch.tensor([t for sample in group for t in sample]).unsqueeze(0)
        positions = torch.cat([torch.arange(len(sample)) for sample in group]).unsqueeze(0)
        batches.append((flat, positions))
    return batches


def build(model_dir: Path, variant: str, precision: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from peftstudio.model import fast_paths

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    attention = fast_paths.register_packed_sdpa() if variant == "packed" else "sdpa"
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attention)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0 if variant == "nodrop" else 0.05,
                                            target_modules="all-linear"))
    if variant != "stock":
        fast_paths.use_masked_dropout(model)
    if variant not in ("stock", "masked"):
        fast_paths.keep_autocast_inputs(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def step(model, optimizer, batch, precision: str, threads: int) -> tuple[float, float]:
    import torch

    ids, positions = batch
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    torch.set_num_threads(previous)
    return seconds, float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--variants", default="stock,masked,nocast,nodrop")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "peftstudio-step-variants")
    args = parser.parse_args()
    import torch

    names = args.variants.split(",")
    model_dir = build_model(args.workdir / "model")
    data = build_dataset(args.workdir / "data.jsonl", rows=args.micro_batch * args.rounds)
    batches = packed_batches(model_dir, data, args.micro_batch, args.rounds)
    built = {name: build(model_dir, name, args.precision) for name in names}
    threads = args.threads or torch.get_num_threads()
    times = {name: [] for name in names}
    losses = {name: [] for name in names}
    for batch in batches:
        for name in names:
            seconds, loss = step(*built[name], batch, args.precision, 1 if name == "threads1" else threads)
            times[name].append(seconds)
            losses[name].append(loss)
    tokens = statistics.mean(b[0].shape[1] for b in batches)
    reference = statistics.median(times[names[0]][1:])
    print(f"{args.precision}, {len(batches)} packed micro-batches of {tokens:.0f} tokens on average, "
          f"{threads} threads; median of rounds 2-{len(batches)}")
    for name in names:
        median = statistics.median(times[name][1:])
        print(f"  {name:9s} {median * 1e3:7.0f} ms/step  {tokens / median:7.0f} tokens/s  {reference / median:5.2f}x  "
              f"losses {' '.join(f'{v:.5f}' for v in losses[name][:3])}")


if __name__ == "__main__":
    main()
