"""What LoRA and DoRA adapters save for backward, per token and per model (pure arithmetic
on the settings plan/memory.py resolves; split from it to keep that module readable)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftstudio.config.schema import RunConfig
from peftstudio.plan.architecture import Linear, targeted_layers, uses_dora

if TYPE_CHECKING:
    from peftstudio.plan.memory import _Settings


def lora_bytes_per_token(layers: list[Linear], settings: _Settings, config: RunConfig) -> int:
    """What the adapters of one block save. A frozen base layer saves nothing for backward;
    its adapter saves the input lora_A sees (peft casts it to the fp32 adapter dtype, dropout
    and autocast make new copies; without either, adapters that share an input share one
    copy), the dropout mask (bool on CUDA, fp32 elsewhere), the rank-r intermediate, and with
    DoRA the base and LoRA outputs its magnitude rescales (the base output recomputed from the
    dropped-out input when there is dropout). Copies and intermediates are at the adapter
    path's precision: compute precision under autocast, else the adapter dtype."""
    c, a, r = settings.compute_bytes, settings.adapter_side_bytes, config.peft.r
    mask_bytes = 1 if settings.device == "cuda" else 4
    dora = uses_dora(config.peft)
    total, shared_inputs = 0, set()
    for layer in layers:
        if settings.fuses_qkv and layer.reads == "attention input" and layer.reads in shared_inputs:
            total += a * r  # one fused adapter: its dropout and input copy serve q, k and v
            continue
        if settings.dropout:
            total += (mask_bytes + a) * layer.in_features
        elif c != settings.adapter_bytes:  # each adapter casts its input to the adapter dtype
            total += a * layer.in_features
        elif layer.reads not in shared_inputs:  # e.g. q/k/v read the normed input, gate/up too
            total += c * layer.in_features
        shared_inputs.add(layer.reads)
        base_output = a if settings.dropout else c
        total += a * r + ((base_output + a) * layer.out_features if dora else 0)
    return total




def dora_weight_copies(settings: _Settings, config: RunConfig) -> int:
    """DoRA with dropout recomputes the base output as F.linear(dropped-out input, weight cast to
    the input's dtype), and that linear saves the cast (or, for 4-bit, dequantized) weight for
    backward: one weight copy per adapted layer, at the adapter path's precision, batch-independent
    (none where the weight already is in the adapter dtype: the cast returns the weight itself).
    Under gradient checkpointing only the recomputed block holds them."""
    copied = settings.quantization != "none" or settings.compute_bytes != settings.adapter_bytes
    if not (uses_dora(config.peft) and settings.dropout and copied):
        return 0
    layers = [layer for layer in targeted_layers(settings.arch, config.peft) if layer.name != "lm_head"]
    per_block = sum(layer.per_model // settings.arch.num_layers * layer.weight_count for layer in layers)
    return settings.adapter_side_bytes * per_block * (1 if settings.checkpointing else settings.arch.num_layers)




def head_input_bytes_per_token(settings: _Settings, config: RunConfig) -> int:
    """What the output head saves per token beyond the loss: its input, when the head is a 4-bit
    matmul that saves it, and an adapter's input and rank-r intermediate when it is adapted."""
    c, h = settings.compute_bytes, settings.arch.hidden_size
    saved = c * h if settings.quantizes_head and settings.quantized_inputs_saved else 0
    if any(layer.name == "lm_head" for layer in targeted_layers(settings.arch, config.peft)):
        mask_bytes = 1 if settings.device == "cuda" else 4
        saved += (mask_bytes + c) * h if settings.dropout else (0 if saved else c * h)
        saved += c * config.peft.r
    return saved
