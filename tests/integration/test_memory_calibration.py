"""The memory estimator's activation terms checked against the bytes autograd really saves on CPU."""

from __future__ import annotations

import pytest

from peftstudio.config.validate import load_config
from peftstudio.plan.memory import OWN_RUNTIME, Runtime, estimate_memory


# (precision, method, target_modules, dropout, autocast): the default targets, DoRA's magnitude
# terms (with dropout its base output is recomputed and the cast weight saved), MLP-only targets
# (the first block's attention then saves nothing), and a bf16 model with fp32 adapters and no
# autocast (PEFT's method comparison), where the adapters' copies are fp32.
CASES = [("fp32", "lora", "all-linear", 0.05, True), ("bf16", "lora", "all-linear", 0.05, True),
         ("fp32", "dora", "all-linear", 0.05, True), ("bf16", "dora", "all-linear", 0.05, True),
         ("bf16", "lora", "[gate_proj,up_proj,down_proj]", 0.0, True),
         ("bf16", "dora", "[gate_proj,up_proj,down_proj]", 0.0, False), ("bf16", "dora", "[q_proj,v_proj]", 0.05, False)]


def test_activation_terms_match_what_autograd_saves_on_cpu():
    """Bytes saved for backward (autograd's saved-tensor hook) vs the estimate, on a small model:
    every case within 6 %."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from peftstudio.model.load import lora_config

    for precision, method, targets, dropout, autocast in CASES:
        config = load_config(["device=cpu", f"training.precision={precision}", "training.attention=sdpa",
                              "training.gradient_checkpointing=off", "training.loss_impl=plain", f"peft={method}",
                              f"peft.dropout={dropout}", f"peft.target_modules={targets}"])[0]
        arch = config.model.architecture
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(
            vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
            num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
            head_dim=arch.head_dim, tie_word_embeddings=True, attn_implementation="sdpa"), dtype=dtype)
        model = get_peft_model(model, lora_config(config.peft)).train()
        batch, length = 2, 128
        ids = torch.randint(0, arch.vocab_size, (batch, length))
        measured = _saved_bytes(model, ids, dtype if autocast else torch.float32)
        result = estimate_memory(config, micro_batch_size=batch, seq_len=length,
                                 runtime=Runtime("peft, no autocast", autocast=False) if not autocast else OWN_RUNTIME)
        # The logits term also holds the logits and the two gradients of backward: not saved tensors.
        not_saved = batch * length * (result.components["logits and loss"] // (batch * length)
                                      - 4 * arch.vocab_size - 4 * arch.hidden_size - 4)
        predicted = result.components["activations"] + result.components["logits and loss"] - not_saved
        assert predicted == pytest.approx(measured, rel=0.06), (precision, method, targets, dropout, autocast)


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
