"""Faster ways to compute what a LoRA training step computes, for the operations a profile of a
CPU step found slow (benchmarks/profile_train.py; figures in benchmarks/README.md):

- `MaskedDropout`: LoRA dropout whose Bernoulli mask comes from numpy's SFC64 bit generator.
  PyTorch draws a CPU dropout mask one element at a time from one locked generator
  (bernoulli_), then divides and multiplies in the input's dtype: on a 26M model at width 512
  the LoRA dropouts were a fifth of the step. Same keep probability (to 0.1 %), same 1/(1-p)
  scale (exact, not rounded to bf16 as nn.Dropout's bf16 mask is); another random stream.
- `keep_autocast_inputs`: under autocast, peft casts each LoRA layer's input to the adapter's
  fp32 before the adapter, and autocast casts it straight back to bf16 for the matmul: two
  copies of every projection input per step, with no effect on the result.

- `packed_attention` ("sdpa_packed"): a padding-free packed row attends sample by sample,
  one causal SDPA call per sample in fp32, instead of one bf16 call under the row's
  block-diagonal mask, which computes every score of the row and whose bf16 backward is PyTorch's
  slowest CPU attention kernel. The same attention, computed in fp32 (more exact than bf16);
  chosen per machine by `plan` from a timed probe (plan/hardware.py: cpu_attention_probe).

train/run.py applies them where `plan` lists them (plan/resolve.py: cpu_fast_paths); each keeps
the library's own path outside its case. Tried and not kept: the per-sample calls in bf16
(0.83-1.2x the masked call's time).
"""

from __future__ import annotations

import numpy as np
import torch


class _KeepScale(torch.autograd.Function):
    """x * mask, then * scale when the mask holds ones rather than the scale (see `dropout_mask`);
    the mask is saved for the backward, which multiplies the gradient the same way."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        out = x.mul(mask)
        return out if scale is None else out.mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        out = grad.mul(mask)
        return (out if ctx.scale is None else out.mul_(ctx.scale)), None, None


def keep_bits(count: int, p: float) -> np.ndarray:
    """`count` booleans, each True with probability 1 - p, independently. 16 random bits an
    element where p is a multiple of 2^-16 to within 0.1 % of itself (0.05 is drawn as
    0.0500031; 0.01 and 0.1 too): half the bits and bytes of 32-bit draws, 1.6-2.2x faster on
    masks of 0.4-4M elements (benchmarks/README.md); 32 bits for any other p (0.001: to 2^-32).
    The bit generator is seeded from torch's default generator, so torch.manual_seed (the run's
    seed) and the RNG state a checkpoint saves and restores decide the masks as before."""
    generator = np.random.SFC64(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
    if abs(round(p * 2**16) - p * 2**16) <= p * 2**16 * 1e-3:
        return generator.random_raw((count + 3) // 4).view(np.uint16)[:count] >= np.uint16(round(p * 2**16))
    return generator.random_raw((count + 1) // 2).view(np.uint32)[:count] >= np.uint32(round(p * 2**32))


def dropout_mask(shape: torch.Size, dtype: torch.dtype, p: float) -> tuple[torch.Tensor, float | None]:
    """(mask, scale) with x * mask [* scale] = dropout(x): for fp32 the mask holds 0 or 1/(1-p)
    itself (one multiplication, the value nn.Dropout's fp32 mask holds); for 16-bit floats it
    holds 0 or 1 and the scale follows in fp32 arithmetic (1/(1-p) rounded to bf16 would be off
    by up to 0.4%). numpy draws the bits; torch (all threads) turns its bytes into the mask's
    dtype: a bool mask would make the multiplication 3x slower, numpy's np.where 1.5x the time."""
    keep = torch.from_numpy(keep_bits(shape.numel(), p).view(np.uint8)).view(shape)
    scale = 1.0 / (1.0 - p)
    if dtype == torch.float32:
        return keep.to(dtype).mul_(scale), None
    return keep.to(dtype), scale


class MaskedDropout(torch.nn.Dropout):
    """nn.Dropout with the mask of `dropout_mask` on CPU tensors; nn.Dropout's own path
    elsewhere (a GPU draws its mask in parallel already)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p >= 1 or self.inplace:
            return super().forward(x)
        with torch.profiler.record_function("lora_dropout_mask"):  # numpy's work is no aten operator
            mask, scale = dropout_mask(x.shape, x.dtype, self.p)
        return _KeepScale.apply(x, mask, scale)


def use_masked_dropout(model) -> int:
    """Swap every LoRA layer's nn.Dropout for a MaskedDropout of the same p; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is torch.nn.Dropout:
                dropouts[name] = MaskedDropout(dropout.p)
                swapped += 1
    return swapped


def keep_autocast_inputs(model) -> int:
    """Let LoRA layers skip casting their input to the adapter dtype while autocast is on (the
    matmul casts to the autocast dtype anyway); outside autocast (generation, evaluation in
    fp32) they cast as before. Returns the number of layers changed."""
    changed = 0
    for module in model.modules():
        cast = getattr(module, "_cast_input_dtype", None)
        if cast is None or not hasattr(module, "lora_A"):
            continue

        def skip_under_autocast(x, dtype, _cast=cast):
            return x if torch.is_autocast_enabled(x.device.type) else _cast(x, dtype)

        module._cast_input_dtype = skip_under_autocast
        changed += 1
    return changed


PACKED_SDPA = "sdpa_packed"
# Raised whenever a fast path here changes what it costs: plan's timed steps (plan/step_probe.py)
# and the attention-kernel probe (plan/hardware.py: cpu_probes) cached under an older revision
# are measured again.
REVISION = 2


def sample_bounds(position_ids, length: int) -> list[int] | None:
    """[0, start of sample 2, ..., length] of one packed row whose `position_ids` restart at each
    sample (as transformers' masking_utils.find_packed_sequence_indices reads a packed row); None
    for anything else (a padded batch, a row holding one sample)."""
    if position_ids is None or position_ids.shape[0] != 1 or position_ids.shape[-1] != length:
        return None
    starts = (torch.diff(position_ids[0]) != 1).nonzero().flatten().add(1).tolist()
    return [0, *starts, length] if starts else None


def per_sample_attention(query, key, value, bounds: list[int], scaling=None) -> torch.Tensor:
    """Causal attention of each packed sample on its own, in fp32: query (1, heads, L, d),
    key/value (1, heads, L, d) with the key/value heads already repeated; returns (1, L, heads, d)
    in the query's dtype. Each tensor is cast once and split, not sliced per sample: a slice's
    backward writes its gradient into a zero tensor of the whole row and autograd sums those, a
    row-sized fill and add per sample, while a split's backward is one concatenation (3x faster
    fwd+bwd at 32 samples of ~90 tokens, the same gradients bit for bit; benchmarks/README.md)."""
    sizes = [end - start for start, end in zip(bounds, bounds[1:])]
    samples = zip(*(tensor.float().split(sizes, dim=2) for tensor in (query, key, value)))
    outputs = [torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=True)
               for q, k, v in samples]
    return torch.cat(outputs, dim=2).to(query.dtype).transpose(1, 2).contiguous()


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                        is_causal=None, **kwargs):
    """transformers' attention-function signature: a packed row (training, no attention dropout)
    goes through `per_sample_attention`; anything else through transformers' own sdpa."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    bounds = sample_bounds(kwargs.get("position_ids"), query.shape[2]) \
        if dropout == 0 and query.shape[0] == 1 and key.shape[2] == query.shape[2] else None
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    return per_sample_attention(query, key, value, bounds, scaling), None


def register_packed_sdpa() -> str:
    """Register "sdpa_packed" with transformers (the attention function, and sdpa's mask for the
    batches it hands to sdpa); returns the name to set as the attention implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def apply_fast_paths(model, paths) -> None:
    """Apply the LoRA-layer fast paths named in `paths` (plan.resolve.cpu_fast_paths' keys) to a
    peft model; the attention path is chosen at load time (`attention_implementation`)."""
    if "masked_dropout" in paths:
        use_masked_dropout(model)
    if "autocast_inputs" in paths:
        keep_autocast_inputs(model)


def attention_implementation(paths, attention: str) -> str:
    """The attention implementation to load the model with: "sdpa_packed" (registered here) when
    `paths` names packed_attention, else `attention` (training.attention)."""
    return register_packed_sdpa() if "packed_attention" in paths else attention
