"""Memory estimator vs measured peak on CPU.

For a matrix of (model width, method, precision, sequence length, micro-batch, gradient
checkpointing) this runs one real training step per cell (forward, backward, AdamW step,
optimizer states already allocated, as find-batch-size probes do) and measures the peak of
live tensor bytes with the dispatch-mode storage tracker; then prints the estimator's
prediction of the same quantity (`MemoryEstimate.tensor_bytes`: everything but the framework
overhead) and the ratio predicted / measured.

What this does not show: the GPU. CUDA kernels differ from CPU ones in what they keep
(bool vs fp32 dropout masks — the estimator models both —, attention workspaces, allocator
rounding and fragmentation), so the GPU target (within 10% of torch.cuda.max_memory_allocated)
needs the GPU run of benchmarks/estimator.

    python benchmarks/estimator_cpu.py            # full matrix (a few minutes on 2 cores)
    python benchmarks/estimator_cpu.py --quick    # 4 cells
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WIDTHS = {  # name: architecture overrides on top of the tiny preset
    "tiny (128 wide, 4 layers)": [],
    "wide (512 wide, 4 layers, vocab 4096)": ["model.architecture.hidden_size=512", "model.architecture.num_heads=8",
                                              "model.architecture.num_kv_heads=2", "model.architecture.head_dim=64",
                                              "model.architecture.intermediate_size=1536",
                                              "model.architecture.vocab_size=4096"],
}


def build_model(config):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from peftstudio.model.load import attach_adapter

    arch = config.model.architecture
    dtype = torch.bfloat16 if config.training.precision == "bf16" else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.head_dim, tie_word_embeddings=arch.tie_embeddings), dtype=dtype,
        attn_implementation=config.training.attention)
    model = attach_adapter(model, config.peft, config.seed)
    if config.training.gradient_checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.train()


def measure(overrides: list[str], seq_len: int, micro_batch: int) -> tuple[int, int]:
    """(predicted tensor bytes, measured peak tensor bytes) of one training step."""
    from peftstudio.config.validate import load_config
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.train.probe import Prober

    config, _ = load_config(["device=cpu", "training.attention=sdpa", "training.loss_impl=plain", *overrides])
    vocab = config.model.architecture.vocab_size
    prober = Prober(config, build_model(config), [4 + i % (vocab - 4) for i in range(seq_len)], None)
    probe = prober.probe(micro_batch)
    predicted = estimate_memory(config, micro_batch_size=micro_batch, seq_len=seq_len).tensor_bytes
    return predicted, probe.peak_bytes


def cells(quick: bool):
    methods = [("lora", "fp32"), ("lora", "bf16"), ("dora", "fp32")]
    shapes = [(256, 1, "off"), (256, 4, "off"), (512, 2, "off"), (512, 2, "on"), (1024, 1, "on")]
    if quick:
        methods, shapes = methods[:2], shapes[1:3]
    for width, extra in WIDTHS.items():
        for method, precision in methods:
            for seq_len, micro_batch, checkpointing in shapes:
                overrides = [*extra, f"peft={method}", f"training.precision={precision}",
                             f"training.gradient_checkpointing={checkpointing}"]
                yield f"{width} {method} {precision} seq {seq_len} batch {micro_batch} gc {checkpointing}", \
                    overrides, seq_len, micro_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="run only the cells whose label contains this text")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    ratios = []
    print(f"{'cell':78s} {'predicted MiB':>14s} {'measured MiB':>13s} {'ratio':>6s}")
    for label, overrides, seq_len, micro_batch in cells(args.quick):
        if args.only not in label:
            continue
        predicted, measured = measure(overrides, seq_len, micro_batch)
        ratios.append(predicted / measured)
        print(f"{label:78s} {predicted / 2**20:14.1f} {measured / 2**20:13.1f} {predicted / measured:6.3f}")
    print(f"ratio predicted/measured: min {min(ratios):.3f}, max {max(ratios):.3f}, "
          f"mean |error| {sum(abs(r - 1) for r in ratios) / len(ratios):.1%} over {len(ratios)} cells")


if __name__ == "__main__":
    main()
