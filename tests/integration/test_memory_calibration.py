"""The memory estimator's activation terms checked against the bytes autograd really saves on CPU."""

from __future__ import annotations

import pytest

from peftstudio.config.validate import load_config
from peftstudio.plan.memory import estimate_memory


def test_activation_terms_match_what_autograd_saves_on_cpu():
    """Bytes saved for backward (autograd's saved-tensor hook) vs the estimate, on a small model
    in fp32 and bf16, LoRA and DoRA: within 10%."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from peftstudio.model.load import lora_config

    for precision, method in (("fp32", "lora"), ("bf16", "lora"), ("fp32", "dora")):
        config = load_config(["device=cpu", f"training.precision={precision}", "training.attention=sdpa",
                              "training.gradient_checkpointing=off", "training.loss_impl=plain", f"peft={method}",
                              "peft.dropout=0.05"])[0]
        arch = config.model.architecture
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
            num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
            head_dim=arch.head_dim, tie_word_embeddings=True, attn_implementation="sdpa"), dtype=dtype)
        model = get_peft_model(model, lora_config(config.peft)).train()
        batch, length = 2, 128
        measured = _saved_bytes(model, torch.randint(0, arch.vocab_size, (batch, length)), dtype)
        result = estimate_memory(config, micro_batch_size=batch, seq_len=length)
        # The logits term also holds the logits and the two gradients of backward: not saved tensors.
        not_saved = batch * length * (result.components["logits and loss"] // (batch * length)
                                      - 4 * arch.vocab_size - 4 * arch.hidden_size - 4)
        predicted = result.components["activations"] + result.components["logits and loss"] - not_saved
        assert predicted == pytest.approx(measured, rel=0.10), (precision, method)


class _Saved:
    """What the pack hook hands autograd: alive exactly as long as the graph keeps the tensor."""

    def __init__(self, tensor):
        self.tensor = tensor


def _saved_bytes(model, ids, dtype) -> int:
    """Bytes of activations autograd still holds when the forward pass (and loss) is done:
    the saved tensors whose graph is alive, each storage once, weights excluded."""
    import weakref

    import torch

    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: list[tuple[weakref.ref, int, int]] = []

    def pack(tensor):
        holder = _Saved(tensor)
        storage = tensor.untyped_storage()
        saved.append((weakref.ref(holder), storage.data_ptr(), storage.nbytes()))
        return holder

    mask = torch.ones_like(ids)
    mask[-1, ids.shape[1] // 2:] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda holder: holder.tensor):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    alive = {pointer: size for ref, pointer, size in saved if ref() is not None and pointer not in weights}
    del loss
    return sum(alive.values())
