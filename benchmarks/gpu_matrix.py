"""Estimator matrix on a CUDA GPU: predicted against measured peak memory for random-weight
Llama- and Qwen-shaped models, LoRA / DoRA / QLoRA, several sequence lengths and micro-batches,
gradient checkpointing off and on, and the chunked against the plain loss. Self-contained: it
needs torch, transformers and peft, plus pydantic (peftstudio's schema), TRL for the chunked loss
and bitsandbytes for QLoRA where present (a case whose package is missing is reported as
skipped). `benchmarks/gpu_matrix.sh` runs it with carried wheels.

    PYTHONPATH=src python benchmarks/gpu_matrix.py --out DIR [--budget-s 390]

Each case mirrors `peftstudio train` on CUDA: base weights in bf16 (4-bit NF4 + double quant for
QLoRA), peft adapters in fp32, bf16 autocast, sdpa attention, AdamW, sequences filled to the
length (no padding), 3 steps; the peak is taken over steps 2-3 (after the optimizer states
exist). Measured: torch.cuda.max_memory_allocated and max_memory_reserved; predicted:
plan.memory.estimate_memory(...) read through the same counters. Results are written after
every case to DIR/gpu_matrix.json and DIR/gpu_matrix.md, so a run cut short keeps what it had.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

MODELS = {
    "llama-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                     tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64, vocab_size=151936,
                         tie_word_embeddings=True),
}
METHODS = ("lora", "dora", "qlora")
SHAPES = ((512, 4), (2048, 1), (2048, 4))  # (sequence, micro-batch)
CHECKPOINTING = ("off", "on")


def run_config(name: str, method: str, seq: int, batch: int, checkpointing: str, loss: str, targets="all-linear"):
    """The resolved peftstudio config of one case (no composition: the schema alone)."""
    from peftstudio.config.schema import RunConfig

    spec = MODELS[name]
    arch = dict(model_type=spec["model_type"], num_layers=spec["num_hidden_layers"], hidden_size=spec["hidden_size"],
                num_heads=spec["num_attention_heads"], num_kv_heads=spec["num_key_value_heads"],
                head_dim=spec["head_dim"], intermediate_size=spec["intermediate_size"],
                vocab_size=spec["vocab_size"], tie_embeddings=spec["tie_word_embeddings"],
                attention_bias=spec["model_type"] == "qwen2")
    quantized = method == "qlora"
    return RunConfig.model_validate({
        "device": "cuda", "platform": "none",
        "model": {"name_or_path": f"random/{name}", "architecture": arch},
        "peft": {"method": method, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": targets,
                 "use_dora": method == "dora", "quantization": "nf4" if quantized else "none",
                 "double_quant": quantized, "compute_dtype": "bf16"},
        "training": {"micro_batch_size": batch, "max_seq_length": seq, "precision": "bf16", "attention": "sdpa",
                     "gradient_checkpointing": checkpointing, "loss_impl": loss, "packing": "off"},
        "optim": {"name": "adamw_torch"},
    })


def build_checkpoint(name: str, directory: Path) -> Path:
    """A random-weight bf16 checkpoint of `name` (QLoRA loads through from_pretrained to quantize)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(MODELS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), max_position_embeddings=4096, **spec)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    del model
    return directory


def load_model(checkpoint: Path, method: str):
    """(model, peak bytes allocated while loading) the way model/load.py loads it."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from peftstudio.model.load import prepare_quantized_for_training

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    quant = None
    if method == "qlora":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16, attn_implementation="sdpa",
                                                 quantization_config=quant, device_map={"": 0})
    load_peak = torch.cuda.max_memory_allocated()
    if quant is not None:
        prepare_quantized_for_training(model, gradient_checkpointing=False)
    return model, load_peak


def measure(base, method: str, seq: int, batch: int, checkpointing: str, loss: str) -> tuple[int, int]:
    """(peak allocated, peak reserved) over steps 2-3 of a fresh adapter on `base`."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                            use_dora=method == "dora"))
    if checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), device="cuda")
    peaks = (0, 0)
    for step in range(3):
        if step == 1:
            torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if loss == "chunked":
                out = model(input_ids=ids, labels=ids, fused_lm_head=True, use_cache=False)
            else:
                out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del out
    peaks = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
    if checkpointing == "on":
        model.gradient_checkpointing_disable()
    del optimizer, ids
    model.unload()  # the base model, without adapter layers, for the next case
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return peaks


def cases(models):
    for name in models:
        for method in METHODS:
            for seq, batch in SHAPES:
                for checkpointing in CHECKPOINTING:
                    yield name, method, seq, batch, checkpointing, "chunked"
            yield name, method, 2048, 4, "off", "plain"


def report(rows: list[dict], out: Path) -> None:
    (out / "gpu_matrix.json").write_text(json.dumps(rows, indent=1))
    lines = ["| model | method | seq | mb | ckpt | loss | predicted alloc | measured alloc | err | predicted reserved | "
             "measured reserved | err |", "|" + " --- |" * 12]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['seq']} | {r['batch']} | {r['checkpointing']} | "
                         f"{r['loss']} | skipped: {r['skipped']} |" + " |" * 6)
            continue
        lines.append(f"| {r['model']} | {r['method']} | {r['seq']} | {r['batch']} | {r['checkpointing']} | {r['loss']} | "
                     f"{r['predicted_allocated'] / 2**30:.2f} | {r['allocated'] / 2**30:.2f} | "
                     f"{r['predicted_allocated'] / r['allocated'] - 1:+.1%} | {r['predicted_reserved'] / 2**30:.2f} | "
                     f"{r['reserved'] / 2**30:.2f} | {r['predicted_reserved'] / r['reserved'] - 1:+.1%} |")
    measured = [r for r in rows if "allocated" in r]
    if measured:
        errors = [abs(r["predicted_allocated"] / r["allocated"] - 1) for r in measured]
        lines.append(f"\n{len(measured)} cases; median |error| (allocated) {statistics.median(errors):.1%}, "
                     f"worst {max(errors):.1%}")
    (out / "gpu_matrix.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=390, help="start no case after this many seconds")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--dry-run", action="store_true", help="predictions only (no GPU): checks every case composes")
    args = parser.parse_args()
    import importlib.util

    import torch

    from peftstudio.plan.memory import estimate_memory

    if args.dry_run:
        for case in cases(args.models):
            print(*case, f"{estimate_memory(run_config(*case)).counter_bytes('allocated') / 2**30:.2f} GiB")
        return

    if not torch.cuda.is_available():
        raise SystemExit("gpu_matrix needs a CUDA GPU")
    args.out.mkdir(parents=True, exist_ok=True)
    have = {"qlora": importlib.util.find_spec("bitsandbytes") is not None,
            "chunked": importlib.util.find_spec("trl") is not None}
    if have["chunked"]:
        try:
            from trl.trainer.utils import add_fused_lm_head  # noqa: F401
        except Exception as error:  # an incompatible carried TRL: plain-loss cases still run
            have["chunked"] = False
            print(f"chunked loss unavailable: {type(error).__name__}: {error}")
    start, rows, loaded, broken = time.monotonic(), [], {}, {}
    workdir = Path(tempfile.mkdtemp(prefix="gpu-matrix-"))
    for name, method, seq, batch, checkpointing, loss in cases(args.models):
        row = dict(model=name, method=method, seq=seq, batch=batch, checkpointing=checkpointing, loss=loss)
        missing = [k for k, ok in have.items() if not ok and k in (method, loss)]
        if missing or time.monotonic() - start > args.budget_s:
            rows.append({**row, "skipped": f"{missing[0]} package missing" if missing else "time budget"})
            report(rows, args.out)
            continue
        key = (name, method == "qlora")
        if key in broken:
            rows.append({**row, "skipped": broken[key]})
            report(rows, args.out)
            continue
        if key not in loaded:
            loaded.clear()
            model = None  # the previous base model must be gone before the next load is measured
            gc.collect()
            torch.cuda.empty_cache()
            checkpoint = workdir / name
            if not (checkpoint / "config.json").exists():
                build_checkpoint(name, checkpoint)
            try:
                model, load_peak = load_model(checkpoint, method)
            except Exception as error:  # e.g. a bitsandbytes without this CUDA's library
                broken[key] = f"load failed: {type(error).__name__}: {str(error)[:200]}"
                rows.append({**row, "skipped": broken[key]})
                report(rows, args.out)
                continue
            if have["chunked"]:
                from trl.trainer.utils import add_fused_lm_head

                add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
            loaded[key] = (model, load_peak)
        model, load_peak = loaded[key]
        try:
            allocated, reserved = measure(model, method, seq, batch, checkpointing, loss)
        except Exception as error:  # out of memory, or one broken case: it must not cost the rest
            rows.append({**row, "skipped": f"{type(error).__name__}: {str(error)[:200]}"})
            report(rows, args.out)
            loaded.pop(key, None)  # the model may still carry this case's adapter: reload it
            model = None
            gc.collect()
            torch.cuda.empty_cache()
            continue
        estimate = estimate_memory(run_config(name, method, seq, batch, checkpointing, loss))
        rows.append({**row, "allocated": allocated, "reserved": reserved, "load_peak": load_peak,
                     "predicted_allocated": estimate.counter_bytes("allocated"),
                     "predicted_reserved": estimate.counter_bytes("reserved"),
                     "predicted_load_peak": estimate.load_peak_bytes, "components": estimate.components})
        report(rows, args.out)
        print(f"{name} {method} {seq}x{batch} ckpt={checkpointing} {loss}: predicted "
              f"{estimate.counter_bytes('allocated') / 2**30:.2f} GiB, measured {allocated / 2**30:.2f} GiB "
              f"({time.monotonic() - start:.0f} s)", flush=True)
    print((args.out / "gpu_matrix.md").read_text())


if __name__ == "__main__":
    main()
