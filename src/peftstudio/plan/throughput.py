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
from peftstudio.plan.architecture import adapter_parameters, architecture_of, head_dim, linear_layers, targeted_layers
from peftstudio.plan.hardware import HardwareProfile


@dataclass(frozen=True)
class FlopsPerToken:
    base: float
    adapter: float
    attention: float
    recompute: float
    vision: float = 0.0  # the vision encoder's share per token (image-text runs)

    @property
    def total(self) -> float:
        return self.base + self.adapter + self.attention + self.recompute + self.vision


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
    return FlopsPerToken(4.0 * linear, 6.0 * adapter, attention, recompute, vision)


def probed_cpu_gflops(hardware: HardwareProfile, width: int | None) -> tuple[int, float, float] | None:
    """(probed width nearest the model's, fp32 GFLOP/s, bf16 GFLOP/s) from the CPU probe
    (plan.hardware.cpu_probes), or None when this machine was not probed."""
    table = hardware.cpu_matmul_gflops
    if not table.get("fp32") or not table.get("bf16"):
        return None
    widths = sorted(int(w) for w in table["fp32"] if w in table["bf16"])
    nearest = min(widths, key=lambda w: abs(math.log(w / (width or 512))))
    return nearest, table["fp32"][str(nearest)], table["bf16"][str(nearest)]


# Operations one micro-batch step dispatches on CPU (forward, backward, gradient clipping, torch's
# fused AdamW), counted with a TorchDispatchMode over a LoRA Llama step as train runs it (peft LoRA,
# model/fast_paths.py): per decoder layer without its adapters, per adapted projection (by
# precision and whether LoRA dropout is on), and once per step (embedding, head, loss,
# optimizer), plus building a packed row's block-diagonal mask (once per step, whatever the layers). tests/unit/test_throughput_model.py
# counts them again on a tiny model, so a library upgrade that changes them fails there.
OPS_PER_LAYER = {"fp32": 168, "bf16": 176}
OPS_PER_ADAPTER = {("fp32", False): 30, ("fp32", True): 36, ("bf16", False): 34, ("bf16", True): 44}
OPS_PER_STEP = 35
OPS_PACKED_MASK = 62


def cpu_operations_per_step(config: RunConfig) -> int:
    """Operations a CPU micro-batch step dispatches (see OPS_PER_LAYER)."""
    arch = architecture_of(config)
    precision = "bf16" if config.training.precision == "bf16" else "fp32"
    adapted = sum(layer.per_model for layer in targeted_layers(arch, config.peft) if layer.name != "lm_head")
    per_adapter = OPS_PER_ADAPTER[(precision, config.peft.dropout > 0)]
    mask = OPS_PACKED_MASK if config.training.packing == "on" else 0
    return arch.num_layers * OPS_PER_LAYER[precision] + adapted * per_adapter + OPS_PER_STEP + mask


@dataclass(frozen=True)
class CpuStepModel:
    """Seconds of a CPU micro-batch step: operations × the measured cost of launching one, plus
    its FLOPs at the measured arithmetic rate of the probe block (plan/hardware.py), both for
    the run's thread count and precision, measured when the plan was made."""

    operations: int
    op_seconds: float
    flops: float
    flops_per_second: float
    tokens: float

    @property
    def seconds(self) -> float:
        return self.operations * self.op_seconds + self.flops / self.flops_per_second

    @property
    def efficiency(self) -> float:
        """The share of the step spent on arithmetic at the probe's rate: what the FLOP-only model misses."""
        return self.flops / self.flops_per_second / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def cpu_step_model(config: RunConfig, hardware: HardwareProfile, samples: int, seq_len: float) -> CpuStepModel | None:
    """The step of `samples` sequences of `seq_len` tokens (padded length unless packed) on this
    CPU, from the probes `detect` measured; None when they were not measured (other machines,
    one-thread workers)."""
    from peftstudio.plan.hardware import THREAD_PROBE_WIDTHS, probe_block_flops

    threads = str(config.training.cpu_threads)
    precision = "bf16" if config.training.precision == "bf16" else "fp32"
    timed = hardware.cpu_thread_ms.get(precision, {})
    if threads not in hardware.cpu_op_us or not timed:
        return None
    width = architecture_of(config).hidden_size
    nearest = min(THREAD_PROBE_WIDTHS, key=lambda w: abs(math.log(w / width)))
    if threads not in timed.get(str(nearest), {}):
        return None
    op_seconds = hardware.cpu_op_us[threads] / 1e6
    # The block's ~40 launches are bare functional calls, far cheaper than a model's (module
    # and peft code around each): its time counts as arithmetic.
    rate = probe_block_flops(nearest) / (timed[str(nearest)][threads] / 1e3)
    probed = probed_cpu_gflops(hardware, width)
    if probed is not None and probed[0] != nearest:  # wider models: the cached probe's width dependence
        reference = probed_cpu_gflops(hardware, nearest)
        column = 2 if precision == "bf16" else 1
        rate *= probed[column] / reference[column]
    tokens = samples * seq_len
    per_token = flops_per_token(config, int(seq_len))
    flops = tokens * per_token.total
    if config.training.packing == "on":
        # SDPA under the packed row's block-diagonal mask computes every score of the row, not
        # each sample's causal half: the row's length, not the sample's, sets the attention FLOPs.
        flops += tokens * per_token.attention * (2 * samples - 1)
    return CpuStepModel(cpu_operations_per_step(config), op_seconds, flops, rate, tokens)


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
