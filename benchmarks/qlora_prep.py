"""QLoRA preparation: what peft's `prepare_model_for_kbit_training` costs against keeping the
unquantized parts (embeddings, output head, norms) at compute precision, with only what needs
fp32 upcast (RMSNorm upcasts internally; the loss runs in fp32).

    PYTHONPATH=src python benchmarks/qlora_prep.py [--vocab 32000] [--steps 4]

Both sides load the same random-weight Llama (NF4 + double quant, bf16 compute, bitsandbytes'
CPU 4-bit kernels; quantized widths multiples of 64), attach the same LoRA (r=16, all linear
layers), and train the same batches under bf16 autocast, as Trainer does with bf16=True.
Reported per side: bytes of the model's parameters after preparation, bytes autograd saves for
backward in one step (saved_tensors_hooks), median step time after a warm-up step, and the
losses (the two must agree to bf16 rounding).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def build(directory: Path, vocab: int, layers: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=512, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def load(directory: Path, prepare: str):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16, quantization_config=quant)
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    if prepare == "peft":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        from peftstudio.model.load import prepare_quantized_for_training

        prepare_quantized_for_training(model, gradient_checkpointing=False)
    torch.manual_seed(1)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))


def step(model, optimizer, batch) -> tuple[float, int, float]:
    import torch

    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item(), saved[0], time.perf_counter() - start


def measure(directory: Path, prepare: str, batches) -> dict:
    import torch

    model = load(directory, prepare)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if "lora" not in n})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses, saved, times = [], 0, []
    for batch in batches:
        loss, saved, seconds = step(model, optimizer, batch)
        losses.append(loss)
        times.append(seconds)
    return {"prepare": prepare, "param_bytes": params, "saved_bytes": saved, "base_dtypes": dtypes,
            "step_s": statistics.median(times[1:]), "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args()
    import torch

    directory = build(Path(tempfile.mkdtemp(prefix="qlora-prep-")), args.vocab, args.layers)
    generator = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq), generator=generator) for _ in range(args.steps)]
    results = [measure(directory, side, batches) for side in ("peft", "peftstudio")]
    for r in results:
        print(f"{r['prepare']:10s} params {r['param_bytes'] / 2**20:7.1f} MiB  saved {r['saved_bytes'] / 2**20:7.1f} MiB  "
              f"step {r['step_s']:.3f} s  base dtypes {','.join(r['base_dtypes'])}  "
              f"losses {' '.join(f'{x:.4f}' for x in r['losses'])}")
    peft, ours = results
    print(f"peftstudio/peft: params {ours['param_bytes'] / peft['param_bytes']:.2f}x, "
          f"saved activations {ours['saved_bytes'] / peft['saved_bytes']:.2f}x, step time {ours['step_s'] / peft['step_s']:.2f}x")


if __name__ == "__main__":
    main()
