"""Time and cost of a run: the work in tokens, the throughput model (or the run's own measured
speed) and the price file give the local device's time and a table of rented GPUs that fit.

Workload: optimizer steps × effective batch × tokens per sequence: the mean tokenized row
(after truncation; estimated at CHARS_PER_TOKEN when plan could not load the tokenizer),
padded to its batch (the plan measured the padding waste) unless packing is on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.plan.architecture import uses_dora
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.prices import PriceFile, load_prices
from peftstudio.plan.runplan import RunPlan
from peftstudio.plan.step_probe import CpuStepTiming, cpu_step_timing
from peftstudio.plan.throughput import (PASSES, flops_per_token, generation_seconds,
                                        measured_throughput, probed_cpu_gflops, tokens_per_second)
from peftstudio.units import GIB

# English text in a byte-level BPE vocabulary of 32k-128k entries: about 4 characters a token
# (plan/pipeline.py estimates with it when the tokenizer cannot be loaded offline).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Workload:
    sequences: int
    tokens_per_sequence: float
    trained_tokens: float  # tokens the GPU computes on, padding included
    useful_tokens: float  # the same without padding: what `train` counts in its tokens/s
    images_per_sequence: float = 0.0  # images through the vision tower per sequence (image-text runs)

    @property
    def seq_len(self) -> int:
        return max(int(round(self.tokens_per_sequence)), 1)

    @property
    def useful_share(self) -> float:
        """Non-padding tokens per computed token: turns a computed-token rate into the rate train logs."""
        return self.useful_tokens / self.trained_tokens if self.trained_tokens else 1.0


@dataclass(frozen=True)
class DeviceEstimate:
    device: str
    tokens_per_second: float | None  # non-padding tokens/s, the rate `train` logs
    hours: float | None
    basis: str  # how tokens_per_second was obtained


@dataclass(frozen=True)
class CostOption:
    provider: str
    gpu: str
    memory_gib: float
    peak_memory_gib: float
    tokens_per_second: float  # non-padding tokens/s, the rate `train` logs
    hours: float
    cost_low: float
    cost_high: float
    precision: str


@dataclass(frozen=True)
class CostReport:
    workload: Workload
    local: DeviceEstimate
    options: list[CostOption]
    too_small: list[str]
    price_file: str
    prices_updated: str
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def workload(plan: RunPlan) -> Workload:
    training = plan.config.training
    # DPO and ORPO train two sequences a pair (chosen, rejected), each counted as a run logs them
    trained = PASSES.get(plan.config.objective, (1, 0, 0))[0]
    sequences = plan.schedule.optimizer_steps * plan.schedule.effective_batch * trained
    mean_tokens = max(plan.data.mean_tokens, 1.0)
    padded = mean_tokens if training.packing == "on" else mean_tokens / max(1.0 - plan.data.padding_waste, 0.05)
    per_sequence = min(padded, float(training.max_seq_length))
    useful = min(mean_tokens, per_sequence)
    if plan.config.objective == "grpo":  # prompts measured with a 1-token stand-in completion; full completions assumed
        grpo = plan.config.grpo
        per_sequence = useful = min(padded - 1 + grpo.max_completion_length,
                                    grpo.max_prompt_length + grpo.max_completion_length)
    images = (plan.data.images or {}).get("images", 0) / max(plan.data.train_rows, 1)
    return Workload(sequences, per_sequence, sequences * per_sequence, sequences * useful, images)


def generation_hours(plan: RunPlan, config: RunConfig, work: Workload, peak_tflops: float, efficiency: float,
                     bandwidth_gbs: float | None, prices: PriceFile) -> float:
    """GRPO: the hours its generation rounds and reference passes add to the training FLOPs
    (plan/throughput.py `generation_seconds`); 0 for every other objective."""
    if config.objective != "grpo":
        return 0.0
    from peftstudio.plan.memory import estimate_memory

    weights = estimate_memory(config, seq_len=work.seq_len).components["base weights"]
    prompt = max(work.tokens_per_sequence - config.grpo.max_completion_length, 1.0)
    seconds = generation_seconds(config, prompt, peak_tflops, efficiency, bandwidth_gbs, prices.efficiency.decode, weights)
    return plan.schedule.optimizer_steps * seconds / 3600


def gpu_profile(name: str, memory_gib: float, bf16: bool) -> HardwareProfile:
    return HardwareProfile("cuda", 1, [name], [int(memory_gib * GIB)], "8.0" if bf16 else "7.5", gpu_bf16=bf16)


def cost_report(plan: RunPlan, price_file: Path | None = None, time_cpu_step: bool = True) -> CostReport:
    """Local time (measured speed when a previous run exists) and the rented GPUs that fit.
    `time_cpu_step=False`: on a CPU, only a step already timed for this shape is used
    (plan/step_probe.py), never a new measurement."""
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.resolve import resolve

    prices = load_prices(price_file)
    work = workload(plan)
    # `auto` intact, resolved again for each GPU; except what the data decided (data.modality)
    base = plan.requested.model_copy(update={"data": plan.requested.data.model_copy(
        update={"modality": plan.config.data.modality})})
    options, too_small = [], []
    for provider, offers in prices.providers.items():
        for gpu_name, (low, high) in offers.items():
            gpu = prices.gpus[gpu_name]
            profile = gpu_profile(gpu_name, gpu.memory_gib, gpu.bf16)
            config = resolve(base, profile, plan.data.padding_waste).config
            estimate = estimate_memory(config, seq_len=config.training.max_seq_length)
            if not estimate.fits(int(gpu.memory_gib * GIB)):
                too_small.append(f"{provider}/{gpu_name}")
                continue
            efficiency = run_efficiency(prices, config)
            speed = tokens_per_second(flops_per_token(config, work.seq_len, work.images_per_sequence), gpu.peak_tflops,
                                      efficiency)
            hours = work.trained_tokens / speed / 3600 + generation_hours(
                plan, config, work, gpu.peak_tflops, efficiency, gpu.memory_bandwidth_gbs, prices)
            options.append(CostOption(provider, gpu_name, gpu.memory_gib, round(estimate.total_bytes / GIB, 2),
                                      speed * work.useful_share, hours, hours * low, hours * high, config.training.precision))
    options.sort(key=lambda o: (o.cost_low, o.hours))
    return CostReport(work, local_estimate(plan, prices, work, time_cpu_step), options, too_small, prices.source,
                      prices.updated.isoformat(), _assumptions(prices, plan, work))


def run_efficiency(prices: PriceFile, config: RunConfig) -> float:
    """The share of the device's dense peak the price file gives a run of `config` (resolved):
    its CPU share on a CPU, else by adapter (DoRA or not, as the run builds it) and 4-bit weights."""
    from peftstudio.plan.memory import quantization_of

    if config.device == "cpu":
        return prices.efficiency.cpu
    return prices.efficiency.on_gpu(uses_dora(config.peft), quantization_of(config))


def local_estimate(plan: RunPlan, prices: PriceFile, work: Workload, time_cpu_step: bool = True) -> DeviceEstimate:
    """This machine: the measured speed of a previous run of the same model and method when one
    exists in the output dir, else the throughput model with this device's peak."""

    hardware, config = plan.hardware, plan.config
    device = ", ".join(hardware.device_names) or f"CPU ({hardware.cpu_cores} cores)"
    measured = measured_throughput(config)
    if measured is not None:  # the measured rate counts non-padding tokens, as `useful_tokens` does
        return DeviceEstimate(device, measured.tokens_per_second, work.useful_tokens / measured.tokens_per_second / 3600,
                              f"measured: median of {measured.logs} logs in {measured.source}")
    step = cpu_step_timing(config, hardware, _micro_batch(config), work.tokens_per_sequence, plan.data.mean_tokens,
                           measure=time_cpu_step) \
        if hardware.accelerator == "cpu" else None
    if step is not None:
        return DeviceEstimate(device, step.tokens_per_second * work.useful_share,
                              work.trained_tokens / step.tokens_per_second / 3600, cpu_basis(step, config))
    peak, basis = _local_peak(hardware, prices, config)
    if peak is None:
        return DeviceEstimate(device, None, None, basis)
    if hardware.accelerator == "cpu" and not time_cpu_step:
        basis += "; `peftstudio plan` times a step of this shape on this CPU instead"
    efficiency = run_efficiency(prices, config)
    speed = tokens_per_second(flops_per_token(config, work.seq_len, work.images_per_sequence), peak, efficiency)
    hours = work.trained_tokens / speed / 3600
    if config.objective == "grpo":
        bandwidth = _local_bandwidth(hardware, prices)
        hours += generation_hours(plan, config, work, peak, efficiency, bandwidth, prices)
        basis += (f"; + generation of {config.grpo.max_completion_length} tokens × the generation batch per step, "
                  + (f"memory-bound at {bandwidth:g} GB/s × {prices.efficiency.decode:g}" if bandwidth else "FLOPs only")
                  + ", and the reference pass")
    return DeviceEstimate(device, speed * work.useful_share, hours, basis)


def _micro_batch(config: RunConfig) -> int:
    size = config.training.micro_batch_size
    return size if isinstance(size, int) else 1


def cpu_basis(step: CpuStepTiming, config: RunConfig) -> str:
    training = config.training
    return (f"measured: a micro-batch step of this model's shape timed on this CPU ({training.precision}, "
            f"{training.cpu_threads} thread(s), the run's adapter and kernels; plan/step_probe.py): "
            + (f"{step.timed_seconds * 1e3:.1f} ms with {step.timed_layers} blocks + {step.layers - step.timed_layers} × "
               f"{step.layer_seconds * 1e3:.1f} ms per further block = " if step.layers > step.timed_layers else "")
            + f"{step.seconds * 1e3:.0f} ms for {step.tokens:.0f} tokens")


def _local_bandwidth(hardware: HardwareProfile, prices: PriceFile) -> float | None:
    if hardware.accelerator == "cuda" and hardware.device_names:
        name = prices.gpu_for_device(hardware.device_names[0])
        return prices.gpus[name].memory_bandwidth_gbs if name is not None else None
    return None


def _local_peak(hardware: HardwareProfile, prices: PriceFile, config: RunConfig) -> tuple[float | None, str]:
    if hardware.accelerator == "cpu":
        from peftstudio.plan.architecture import architecture_of

        probed = probed_cpu_gflops(hardware, architecture_of(config).hidden_size)
        if probed is not None:
            # The probe times the work that dominates a step at the model's own width, in the
            # run's precision; the efficiency covers what it leaves out (norms, attention, loss).
            width, fp32, bf16 = probed
            gflops = bf16 if config.training.precision == "bf16" else fp32
            return gflops / 1000, (f"model: {gflops:g} GFLOP/s measured on this CPU ({config.training.precision}, "
                                   f"LoRA MLP block of width {width}) × {prices.efficiency.cpu:g} efficiency")
        peak = hardware.cpu_cores * prices.cpu_gflops_per_core / 1000
        return peak, f"model: {hardware.cpu_cores} cores × {prices.cpu_gflops_per_core:g} GFLOPS × {prices.efficiency.cpu:g} efficiency"
    if hardware.accelerator == "cuda" and hardware.device_names:
        name = prices.gpu_for_device(hardware.device_names[0])
        if name is not None:
            return prices.gpus[name].peak_tflops, f"model: {name} peak {prices.gpus[name].peak_tflops:g} TFLOPS"
        return None, f"{hardware.device_names[0]} is not in the price file; add it under gpus: to estimate"
    return None, "no peak known for this accelerator; train once and plan again to use the measured speed"


def _assumptions(prices: PriceFile, plan: RunPlan, work: Workload) -> list[str]:
    lengths = "the tokenizer" if plan.data.tokens_measured else f"~{CHARS_PER_TOKEN:g} characters per token (no tokenizer here)"
    return [
        f"sequence lengths from {lengths}",
        "FLOPs/token: 4N frozen base (forward + input gradients) + 6N adapter + causal attention; "
        "+2N recompute with gradient checkpointing" + _vision_assumption(plan, work),
        _efficiency_assumption(prices, plan.config),
        f"one GPU; prices per GPU-hour as of {prices.updated.isoformat()} ({prices.source})",
    ] + _padding_assumption(work) + _passes_assumption(plan.config.objective) + (
        ["GRPO: every completion runs to grpo.max_completion_length; generation is paced by memory bandwidth "
         f"× {prices.efficiency.decode:g} (or by FLOPs where that is slower), plus one reference forward pass"]
        if plan.config.objective == "grpo" else [])


def _padding_assumption(work: Workload) -> list[str]:
    if work.useful_share >= 1.0:
        return []
    return [f"tokens/s count non-padding tokens, as `train` logs them; the time also covers the "
            f"{1 - work.useful_share:.1%} of computed tokens that are padding"]


def _efficiency_assumption(prices: PriceFile, config: RunConfig) -> str:
    from peftstudio.plan.memory import quantization_of

    method, quantization = config.peft.method, quantization_of(config)
    share = prices.efficiency.on_gpu(uses_dora(config.peft), quantization)
    return (f"GPU efficiency {share:.3g} of dense peak for {method}"
            + (" on 4-bit weights" if quantization in ("nf4", "fp4") else "")
            + f" (the price file's efficiency: default {prices.efficiency.default:g}, "
            + (f"dora {prices.efficiency.dora:g}, " if prices.efficiency.dora else "")
            + f"4-bit {prices.efficiency.quantized_4bit:g}; sources cited there)")


def _passes_assumption(objective: str) -> list[str]:
    """What a preference row computes, from the count the FLOPs and the CPU step probe use."""
    trained, policy_forwards, reference_forwards = PASSES.get(objective, (1, 0, 0))
    if (trained, policy_forwards, reference_forwards) == (1, 0, 0):
        return []

    def sequences(count: int) -> str:
        return f"{count} sequence{'s' if count > 1 else ''}"

    passes = [f"{sequences(trained)} trained (forward and backward)"]
    if policy_forwards:
        passes.append(f"{sequences(policy_forwards)} forward through the policy without gradients")
    if reference_forwards:
        passes.append(f"{sequences(reference_forwards)} forward through the reference (adapters off)")
    return [f"{objective.upper()}: each row is " + ", ".join(passes) + ", at the row's measured length "
            "(plan/throughput.py PASSES)"]


def _vision_assumption(plan: RunPlan, work: Workload) -> str:
    """The vision encoder's part of the FLOPs, for an image-text run."""
    from peftstudio.plan.vision_memory import vision_flops_per_image

    per_image = vision_flops_per_image(plan.config)
    images = work.images_per_sequence
    if not per_image or not images:
        return ""
    kind = "forward only: tower frozen, no gradient enters it" if plan.config.peft.target_scope == "language" \
        else "forward + input gradients: adapters in the tower"
    return f"; + vision encoder {per_image / 1e12:.2f} TFLOP per image ({kind}) × {images:.2f} images per sequence"


def fmt_hours(hours: float | None) -> str:
    if hours is None or math.isnan(hours):
        return "unknown"
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"
