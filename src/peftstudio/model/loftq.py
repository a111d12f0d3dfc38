"""LoftQ initialisation for an adapter on a 4-bit base.

The adapter starts as the best rank-r approximation of the quantization error W − Q(W), so
base + adapter begins closer to the original full-precision model than QLoRA's zero start.
peft 0.21's own LoftQ (`init_lora_weights="loftq"`, `replace_lora_weights_loftq`) computes
on CUDA only; this is the same one-iteration method on whatever device the weights are on.
"""

from __future__ import annotations

import json
from pathlib import Path

PEFT_PREFIX = "base_model.model."


def apply_loftq(peft_model, location: str, adapter_name: str = "default") -> int:
    """Set every 4-bit LoRA layer's A and B from the SVD of its quantization error; returns
    how many layers were initialised."""
    import bitsandbytes as bnb
    import torch

    originals = _OriginalWeights(location)
    count = 0
    for name, module in peft_model.named_modules():
        base = getattr(module, "base_layer", None)
        if not isinstance(base, bnb.nn.Linear4bit) or adapter_name not in getattr(module, "lora_A", {}):
            continue
        original = originals.get(name.removeprefix(PEFT_PREFIX) + ".weight").to(base.weight.device, torch.float32)
        quantized = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
        down, up = _low_rank(original - quantized, module.r[adapter_name])
        # The layer adds scaling × B @ A; dividing B by the scaling makes the sum exactly the residual part.
        module.lora_A[adapter_name].weight.data = down.to(module.lora_A[adapter_name].weight.dtype)
        module.lora_B[adapter_name].weight.data = (up / module.scaling[adapter_name]).to(
            module.lora_B[adapter_name].weight.dtype)
        count += 1
    return count


def _low_rank(matrix, rank: int):
    """(A, B) with B @ A the best rank-`rank` approximation of `matrix` (split evenly by √S)."""
    import torch

    left, singular, right = torch.linalg.svd(matrix, full_matrices=False)
    root = torch.sqrt(singular[:rank])
    return root[:, None] * right[:rank], left[:, :rank] * root[None, :]


class _OriginalWeights:
    """Full-precision tensors read lazily from the model's safetensors file(s)."""

    def __init__(self, location: str):
        self.files = _safetensors_files(location)

    def get(self, name: str):
        from safetensors import safe_open

        for path in self.files:
            with safe_open(path, framework="pt", device="cpu") as handle:
                if name in handle.keys():
                    return handle.get_tensor(name)
        raise KeyError(f"{name} not found in {', '.join(map(str, self.files))}")


def _safetensors_files(location: str) -> list[Path]:
    from transformers.utils import cached_file

    single = cached_file(location, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    if single:
        return [Path(single)]
    index = cached_file(location, "model.safetensors.index.json")
    shards = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
    return [Path(cached_file(location, shard)) for shard in shards]
