"""Memory per process under each way of spreading a run over N devices, and the smallest way
that fits (pure arithmetic on the one-process estimate of plan/memory.py).

Every process trains on its own micro-batch, so activations, logits and the framework's own
memory stay per process whatever the strategy. What the strategies change is where the model
states live (N processes, device memory D):

- ddp: every process holds everything (a replica), and DDP's gradient buckets are one more
  flat copy of the trainable gradients for the all-reduce.
- deepspeed_zero2: weights replicated; trainable gradients and optimizer states split N ways.
- fsdp (FSDP2, FULL_SHARD): every weight, gradient and optimizer state split N ways; a
  transformer block is gathered whole while it computes and the next one is prefetched (two
  blocks unsharded at once); the root module (embeddings, head, final norm) stays gathered
  from forward to backward (it is not resharded after forward).
- deepspeed_zero3 as peftstudio writes it (offload_param and offload_optimizer to CPU): the
  weight shards and the optimizer states live in CPU RAM; the device holds the gathered working
  set (two blocks, or the embedding matrix while it is used) and the gradients' partition.

Four-bit weights shard at their stored size (bitsandbytes packs them into a float storage
that FSDP / ZeRO-3 can split); the dequantized layer transient stays per process.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftstudio.config.schema import RunConfig
from peftstudio.plan.architecture import architecture_of, embedding_parameters
from peftstudio.plan.memory import PRECISION_BYTES, MemoryEstimate, dequantized_weight_bytes, quantization_of
from peftstudio.units import format_gib

STRATEGIES = ("ddp", "deepspeed_zero2", "fsdp", "deepspeed_zero3")
MODEL_STATES = ("base weights", "LoRA weights", "gradients", "optimizer states")
# Blocks unsharded at once under FSDP / ZeRO-3: the one computing and the one prefetched.
GATHERED_BLOCKS = 2


@dataclass(frozen=True)
class StrategyEstimate:
    strategy: str
    processes: int
    components: dict[str, int]  # bytes on each device
    host_bytes: int  # bytes each process keeps in CPU RAM instead (ZeRO-3 offload)

    @property
    def total_bytes(self) -> int:
        return sum(self.components.values())

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "processes": self.processes, "components": self.components,
                "total_bytes": self.total_bytes, "host_bytes": self.host_bytes}


def strategy_estimate(config: RunConfig, estimate: MemoryEstimate, strategy: str, processes: int) -> StrategyEstimate:
    """Bytes per device when `estimate` (one process) runs under `strategy` on `processes` devices."""
    parts = dict(estimate.components)
    weights, lora, gradients, optimizer = (parts.pop(name) for name in MODEL_STATES)
    transient, root, block = _weight_split(config, weights)
    n = processes
    if strategy in ("none", "ddp"):
        states = {"base weights": weights, "LoRA weights": lora, "gradients": gradients, "optimizer states": optimizer}
        if strategy == "ddp" and n > 1:
            states["DDP gradient buckets"] = gradients
        return StrategyEstimate(strategy, n, {**states, **parts}, 0)
    if strategy == "deepspeed_zero2":
        states = {"base weights": weights, "LoRA weights": lora, "gradients": _split(gradients, n),
                  "optimizer states": _split(optimizer, n)}
        return StrategyEstimate(strategy, n, {**states, **parts}, 0)
    stored = weights - transient  # root + every block, at their stored size
    gathered = GATHERED_BLOCKS * block
    if strategy == "fsdp":
        states = {"base weights": _split(stored - root, n) + root + transient, "gathered blocks": gathered,
                  "LoRA weights": _split(lora, n), "gradients": _split(gradients, n),
                  "optimizer states": _split(optimizer, n)}
        return StrategyEstimate(strategy, n, {**states, **parts}, 0)
    if strategy == "deepspeed_zero3":
        working_set = max(gathered, root)
        states = {"gathered weights": working_set + transient, "gradients": _split(gradients, n)}
        host = _split(stored, n) + _split(lora, n) + _split(optimizer, n)
        return StrategyEstimate(strategy, n, {**states, **parts}, host)
    raise ValueError(f"unknown strategy {strategy!r}")


def recommend_strategy(config: RunConfig, estimate: MemoryEstimate, processes: int,
                       device_bytes: int) -> tuple[str | None, StrategyEstimate | None, str]:
    """The first strategy, simplest first, whose per-device peak fits `device_bytes` on
    `processes` devices: (name, its estimate, the reason), or (None, None, why none fits)."""
    order = ("none", "deepspeed_zero3") if processes == 1 else STRATEGIES
    tried = []
    for name in order:
        candidate = strategy_estimate(config, estimate, name, processes)
        if candidate.total_bytes <= device_bytes:
            skipped = f" ({'; '.join(tried)})" if tried else ""
            offload = f", {format_gib(candidate.host_bytes)} of CPU RAM per process" if candidate.host_bytes else ""
            return name, candidate, (f"{name}: {format_gib(candidate.total_bytes)} per device fits "
                                     f"{format_gib(device_bytes)} on {processes} device(s){offload}{skipped}")
        tried.append(f"{name} needs {format_gib(candidate.total_bytes)}")
    return None, None, f"nothing fits {format_gib(device_bytes)} on {processes} device(s): {'; '.join(tried)}"


def _weight_split(config: RunConfig, weights: int) -> tuple[int, int, int]:
    """(dequantized-layer transient, root module bytes, one block's stored bytes) of the base
    weights component."""
    arch = architecture_of(config)
    compute = PRECISION_BYTES[config.training.precision]
    quantized = quantization_of(config) != "none"
    transient = dequantized_weight_bytes(arch, compute) if quantized else 0
    # Embeddings, an untied head and the final norm stay unquantized at compute precision.
    heads = 1 if arch.tie_embeddings else 2
    root = compute * (heads * embedding_parameters(arch) + arch.hidden_size)
    block = (weights - transient - root) // arch.num_layers
    return transient, root, block


def _split(value: int, processes: int) -> int:
    return -(-value // processes)
