"""How a training stack holds the tensors the memory estimate counts (plan/memory.py).

peftstudio's own stack is the default; the others are the stacks whose published peaks the
estimate is held against (tests/data/published_memory.json), each mechanism named after what
that stack's code does, never a per-measurement factor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    """How a training stack holds what the estimate counts. The default is peftstudio's own
    (peft adapters in fp32, unquantized weights at compute precision, the loss training.loss_impl
    picks); the other stacks exist so that the estimate can be held against what they measured.

    adapter_bytes: bytes per adapter weight, and per gradient and AdamW state (None: fp32, as
    peft keeps them; LitGPT's and torchtune's bf16-true runs keep them at compute precision).
    upcast_unquantized: peft's prepare_model_for_kbit_training, which casts every non-4-bit
    weight to fp32, so the residual stream, the activations and the logits run in fp32 too.
    loss: "config" (training.loss_impl), "plain", "compute" (a cross-entropy at compute
    precision without an fp32 copy) or "fp32-output" (the model returns its logits at compute
    precision and the framework casts them to fp32 before the cross-entropy: Fabric's
    HalfPrecision and BitsandbytesPrecision convert_output to the default dtype) or "fp32-logits"
    (transformers up to 4.44: the model upcasts its logits to fp32 and keeps them in its output).
    quantized_layers_save_input: bitsandbytes' 4-bit matmul saving its input for backward, as
    its 2023-2024 releases did (0.41.1 in LitGPT's table); the pinned 0.50 saves none.
    repeats_kv_heads: grouped-query key/value heads expanded to every query head before the
    attention kernel, which then saves them at full width (LitGPT's CausalSelfAttention).
    holds_previous_graph: the training loop keeps the previous step's output (LitGPT's `logits`
    list) until the next forward returns, and with it that step's graph: what an autograd
    Function keeps on `ctx` rather than through save_for_backward is not freed by backward and
    so stays alive into the next forward (bitsandbytes 0.41-0.43 MatMul4Bit keeps its input as
    `ctx.tensors`), as do the previous logits themselves.
    quantizes_head: every nn.Linear is 4-bit, the output head included (Lightning Fabric's
    BitsandbytesPrecision replaces them all; transformers keeps lm_head unquantized).
    dequantizes_from_fp16: the 4-bit weights were quantized from fp16 (Fabric's `quantize`
    casts to half first), so each matmul's dequantized weight is fp16 and then a compute-precision
    copy of it (`.to(A.dtype)`), both alive at once.
    fuses_qkv: query, key and value are one fused linear layer (LitGPT's `attn`) with one
    adapter (LoRAQKVLinear): one dropout and one copy of the input serve all three; and where
    no kv heads are repeated (multi-head attention) the value the attention saves is a view of
    the fused output, which keeps the query and key parts of it alive too.
    autocast: adapters in another dtype than the weights run under autocast (the Trainer's bf16,
    peftstudio's), which casts their inputs to compute precision. Without it (a bf16 model with
    fp32 adapters and no autocast, as PEFT's method comparison runs) each adapter casts its input
    to the adapter dtype itself (peft's _cast_input_dtype): the saved input copy, the rank-r
    intermediate and DoRA's LoRA output are at the adapter dtype, and with dropout DoRA recomputes
    the base output from the dropped-out adapter-dtype input."""

    name: str = "peftstudio"
    adapter_bytes: int | None = None
    upcast_unquantized: bool = False
    loss: str = "config"
    quantized_layers_save_input: bool = False
    repeats_kv_heads: bool = False
    holds_previous_graph: bool = False
    quantizes_head: bool = False
    dequantizes_from_fp16: bool = False
    fuses_qkv: bool = False
    autocast: bool = True


OWN_RUNTIME = Runtime()  # how peftstudio itself holds memory

