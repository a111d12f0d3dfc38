"""Faster ways to compute what a LoRA training step computes, for the operations a profile of a
CPU step found slow (benchmarks/profile_train.py; figures in benchmarks/README.md):

- `MaskedDropout`: LoRA dropout whose Bernoulli mask comes from numpy's SFC64 bit generator.
  PyTorch draws a CPU dropout mask one element at a time from one locked generator
  (bernoulli_), then divides and multiplies in the input's dtype: on a 26M model at width 512
  the LoRA dropouts were a fifth of the step. Same keep probability (to 2^-32), same 1/(1-p)
  scale (exact, not rounded to bf16 as nn.Dropout's bf16 mask is); another random stream.
- `keep_autocast_inputs`: under autocast, peft casts each LoRA layer's input to the adapter's
  fp32 before the adapter, and autocast casts it straight back to bf16 for the matmul: two
  copies of every projection input per step, with no effect on the result.

train/run.py applies them where `plan` lists them (plan/resolve.py: cpu_fast_paths); each keeps
the library's own path outside its case. Tried and not kept: one causal SDPA call per packed
sample instead of one call under the row's block-diagonal mask (measured 1.01x a step).
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


# The bit patterns of 1.0 in the 16-bit float types numpy has no arithmetic for.
_ONE_BITS = {torch.bfloat16: np.uint16(0x3F80), torch.float16: np.uint16(0x3C00)}


def keep_bits(count: int, p: float) -> np.ndarray:
    """`count` booleans, each True with probability 1 - p (to 2^-32), independently. The bit
    generator is seeded from torch's default generator, so torch.manual_seed (the run's seed)
    and the RNG state a checkpoint saves and restores decide the masks as before."""
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    bits = np.random.SFC64(seed).random_raw((count + 1) // 2).view(np.uint32)[:count]
    return bits >= np.uint32(round(p * 2**32))


def dropout_mask(shape: torch.Size, dtype: torch.dtype, p: float) -> tuple[torch.Tensor, float | None]:
    """(mask, scale) with x * mask [* scale] = dropout(x): for fp32 the mask holds 0 or 1/(1-p)
    itself (one multiplication, the value nn.Dropout's fp32 mask holds); for 16-bit floats it
    holds 0 or 1 and the scale follows in fp32 arithmetic (1/(1-p) rounded to bf16 would be off
    by up to 0.4%). Built in numpy: a bool mask would make the multiplication 4x slower."""
    keep = keep_bits(shape.numel(), p)
    scale = 1.0 / (1.0 - p)
    if dtype == torch.float32:
        return torch.from_numpy(np.where(keep, np.float32(scale), np.float32(0))).view(shape), None
    if dtype in _ONE_BITS:
        ones = np.where(keep, _ONE_BITS[dtype], np.uint16(0))
        return torch.from_numpy(ones).view(dtype).view(shape), scale
    return torch.from_numpy(keep).to(dtype).view(shape), scale


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
