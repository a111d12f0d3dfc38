"""How fast a run trains: FLOPs per token from the architecture and the adapter method, and
tokens per second on a device with a given dense peak and efficiency.

Per trained token (counting a multiply-add as 2 FLOPs, N = weights of the linear layers a token
passes through, head included):

    frozen base, LoRA:   forward 2N + backward through the frozen weights to their inputs 2N = 4N
                         (no weight gradients: the base is frozen)
    adapters:            6 × N_adapter (forward, input gradient, weight gradient)
    attention scores:    12 × layers × seq × (heads × head_dim) × 1/2 (causal: half the scores)
    gradient checkpointing recomputes the forward once more: + 2N + 2 N_adapter + 1/3 of attention

Full fine-tuning would be the familiar 6N; LoRA saves the weight-gradient third.

An image-text run adds its vision encoder (plan/vision_memory.py: vision_flops_per_image),
spread over the sequence's tokens: images per sequence x the tower's FLOPs per image / tokens.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.plan.architecture import adapter_parameters, architecture_of, head_dim, linear_layers
from peftstudio.plan.hardware import HardwareProfile


# What one row of each objective runs, as TRL's trainers run it with peftstudio's settings
# (train/objectives.py), in sequences of the row's measured length: (trained, forward and
# backward; run forward through the policy without gradients; run forward through the
# adapter-disabled reference). DPO and ORPO train the chosen and the rejected answer; DPO and KTO
# score the reference batch by batch; KTO's KL batch (mismatched completions) goes through the
# policy and the reference without gradients. GRPO's own generation model is `generation_seconds`.
PASSES = {"sft": (1, 0, 0), "orpo": (2, 0, 0), "dpo": (2, 0, 2), "kto": (1, 1, 2)}


@dataclass(frozen=True)
class FlopsPerToken:
    base: float
    adapter: float
    attention: float
    recompute: float
    vision: float = 0.0  # the vision encoder's share per token (image-text runs)
    objective: float = 0.0  # a preference row's forward-only passes (PASSES), per token it trains

    @property
    def total(self) -> float:
        return self.base + self.adapter + self.attention + self.recompute + self.vision + self.objective


def flops_per_token(config: RunConfig, seq_len: int, images_per_sequence: float = 0.0) -> FlopsPerToken:
    """Training FLOPs per token of `config` (resolved) at sequence length `seq_len`, with
    `images_per_sequence` images through the vision tower per sequence (0: text only)."""
    from peftstudio.plan.vision_memory import vision_flops_per_image

    arch = architecture_of(config)
    # a mixture-of-experts token passes through its routed experts only
    linear = sum((layer.per_token or layer.per_model) * layer.weight_count for layer in linear_layers(arch))
    adapter = adapter_parameters(arch, config.peft)
    attention = 12 * arch.num_layers * seq_len * arch.num_heads * head_dim(arch) * 0.5
    recompute = 0.0
    if config.training.gradient_checkpointing == "on":
        recompute = 2 * linear + 2 * adapter + attention / 3
    vision = images_per_sequence * vision_flops_per_image(config) / max(seq_len, 1)
    trained, policy_forwards, reference_forwards = PASSES.get(config.objective, (1, 0, 0))
    forward = 2.0 * linear + attention / 3  # forward only: no input gradients, no recompute
    # per token of a trained sequence: a pair's two trained sequences share its forward-only passes
    objective = (policy_forwards * (forward + 2.0 * adapter) + reference_forwards * forward) / trained
    return FlopsPerToken(4.0 * linear, 6.0 * adapter, attention, recompute, vision, objective)


def probed_cpu_gflops(hardware: HardwareProfile, width: int | None) -> tuple[int, float, float] | None:
    """(probed width nearest the model's, fp32 GFLOP/s, bf16 GFLOP/s) from the CPU probe
    (plan.hardware.cpu_probes), or None when this machine was not probed."""
    table = hardware.cpu_matmul_gflops
    if not table.get("fp32") or not table.get("bf16"):
        return None
    widths = sorted(int(w) for w in table["fp32"] if w in table["bf16"])
    nearest = min(widths, key=lambda w: abs(math.log(w / (width or 512))))
    return nearest, table["fp32"][str(nearest)], table["bf16"][str(nearest)]


def tokens_per_second(flops: FlopsPerToken, peak_tflops: float, efficiency: float) -> float:
    return peak_tflops * 1e12 * efficiency / flops.total


@dataclass(frozen=True)
class MeasuredThroughput:
    tokens_per_second: float
    logs: int
    source: Path


def measured_throughput(config: RunConfig) -> MeasuredThroughput | None:
    """Non-padding tokens/s of a previous run of the same model and method in this run's
    output dir (its metrics.jsonl), median over its logs after the first (warm-up)."""
    from peftstudio.errors import UserError
    from peftstudio.plan.runs import read_run

    try:
        record = read_run(config.training.output_dir, require_plan=True)
    except UserError:  # no previous run there, or one of another plan format: nothing measured
        return None
    previous = record.plan.config
    same = (previous.model.name_or_path == config.model.name_or_path and previous.peft.method == config.peft.method
            and previous.training.micro_batch_size == config.training.micro_batch_size)
    rates = [r["tokens_per_second"] for r in record.metrics if r.get("tokens_per_second")][1:]
    if not same or not rates:
        return None
    return MeasuredThroughput(statistics.median(rates), len(rates), record.paths.metrics)


def generation_seconds(config: RunConfig, prompt_tokens: float, peak_tflops: float, efficiency: float,
                       bandwidth_gbs: float | None, decode_efficiency: float, weight_bytes: int) -> float:
    """Seconds of one GRPO optimizer step spent outside the training FLOPs: generating the
    generation batch (micro-batch × accumulation completions) and scoring it with the reference.

    - prefill: 2N FLOPs per prompt token of every completion;
    - decode: max_completion_length steps, each the larger of its FLOPs (2N per completion) and
      reading every weight plus the KV cache once (memory-bound: `bandwidth_gbs` at
      `decode_efficiency`; without a bandwidth, FLOPs only);
    - reference log-probs (grpo.beta > 0): one forward, 2N per prompt + completion token."""
    arch = architecture_of(config)
    grpo, training = config.grpo, config.training
    linear = sum((layer.per_token or layer.per_model) * layer.weight_count for layer in linear_layers(arch))
    batch = (training.micro_batch_size if isinstance(training.micro_batch_size, int) else 1) * training.gradient_accumulation_steps
    flops_per_second = peak_tflops * 1e12 * efficiency
    completion = grpo.max_completion_length
    prefill = batch * prompt_tokens * 2 * linear / flops_per_second
    decode_flops = batch * 2 * linear / flops_per_second
    decode_bytes = 0.0
    if bandwidth_gbs:
        kv_width = 2 * arch.num_layers * arch.num_kv_heads * head_dim(arch) * (4 if training.precision == "fp32" else 2)
        kv = batch * (prompt_tokens + completion / 2) * kv_width  # the cache read at the average decode step
        decode_bytes = (weight_bytes + kv) / (bandwidth_gbs * 1e9 * decode_efficiency)
    reference = batch * (prompt_tokens + completion) * 2 * linear / flops_per_second if grpo.beta > 0 else 0.0
    return prefill + completion * max(decode_flops, decode_bytes) + reference
