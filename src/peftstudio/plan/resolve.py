"""Turn every `auto` into a concrete value and a one-line reason.

Resolution reads only its arguments (the validated config, a `HardwareProfile`, and what was
measured about the data), so a test can ask "what would an H100 get?" with a fake profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from peftstudio.config.schema import RunConfig
from peftstudio.errors import UserError
from peftstudio.plan.architecture import architecture_of, targeted_layers
from peftstudio.plan.hardware import PROBE_TOKENS, HardwareProfile
from peftstudio.plan.memory import estimate_memory, largest_fitting_micro_batch
from peftstudio.plan.platforms import recommend_platform
from peftstudio.plan.throughput import probed_cpu_gflops
from peftstudio.units import format_gib

# Above this share of padding tokens, packing pays for itself.
PACKING_WASTE_THRESHOLD = 0.25
# Largest micro-batch `auto` picks: on CPUs and Apple GPUs a larger batch buys little speed.
AUTO_MICRO_BATCH_CAP = {"cuda": 64, "mps": 8, "cpu": 8}


@dataclass(frozen=True)
class Resolution:
    config: RunConfig
    reasons: dict[str, str]


def resolve(config: RunConfig, hardware: HardwareProfile, padding_waste: float | None) -> Resolution:
    """A copy of `config` with no `auto` left, and the reason for each value chosen."""
    reasons: dict[str, str] = {}
    values = config.model_dump()
    for key, rule in RULES:
        section, _, name = key.rpartition(".")
        holder = values[section] if section else values
        if holder[name] == "auto":
            holder[name], reasons[key] = rule(values, hardware, padding_waste)
    return Resolution(RunConfig.model_validate(values), reasons)


def _platform(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    return recommend_platform(hardware)


def _device(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    if hardware.accelerator == "cuda":
        names = ", ".join(sorted(set(hardware.device_names)))
        return "cuda", f"{hardware.device_count} CUDA GPU(s) found: {names}"
    if hardware.accelerator == "mps":
        return "mps", "Apple GPU (MPS) found"
    return "cpu", "no CUDA or MPS accelerator found"


def _precision(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    device = values["device"]
    if device == "cuda" and hardware.gpu_bf16:
        return "bf16", "GPU supports bfloat16: same range as fp32, no loss scaling needed"
    if device == "cuda":
        return "fp16", ("GPU has no bfloat16: fp16 with loss scaling; fp16 can overflow to NaN loss — "
                        "if it does, lower optim.learning_rate or raise warmup")
    if device == "mps" and hardware.gpu_bf16:
        return "bf16", "Apple GPU with bfloat16 (macOS 14+): half the activation memory of fp32, no loss scaling"
    if device == "mps":
        return "fp32", "Apple GPU without bfloat16 support (macOS before 14): fp32"
    return _cpu_precision(values, hardware)


# The probed block (projections, adapter, casts) must run this much faster under bf16 autocast
# before a whole step does: norms, rotary, attention, the loss and the optimizer gain nothing.
CPU_BF16_MIN_BLOCK_SPEEDUP = 1.3


def _cpu_precision(values: dict[str, Any], hardware: HardwareProfile) -> tuple[str, str]:
    if not hardware.cpu_bf16:
        return "fp32", "CPU run without bf16 matrix units (AVX512-BF16 / AMX): fp32"
    width = _hidden_size(values)
    measured = probed_cpu_gflops(hardware, width)
    if measured is None:
        return "fp32", ("CPU with bf16 units, but bf16 matmul speed was not measured on this machine "
                        "(`peftstudio detect` probes it): fp32")
    probed_width, fp32, bf16 = measured
    figures = (f"bf16 {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s ({bf16 / fp32:.1f}x) on an MLP block of width "
               f"{probed_width} with a LoRA adapter, {PROBE_TOKENS} tokens forward and backward, measured on this CPU")
    if bf16 < CPU_BF16_MIN_BLOCK_SPEEDUP * fp32:
        return "fp32", (f"{figures}: under the {CPU_BF16_MIN_BLOCK_SPEEDUP}x a whole step needs to gain; "
                        "fp32 keeps results exact")
    return "bf16", (f"{figures}: bf16 autocast, the adapter weights kept in fp32 (their bf16 inputs are not cast "
                    "to fp32 first: the autocast matmul would cast them straight back)")


def _hidden_size(values: dict[str, Any]) -> int | None:
    """The model's width from the config's architecture numbers or a local model's config.json."""
    try:
        return architecture_of(RunConfig.model_validate(values)).hidden_size
    except (UserError, ValueError):
        return None


def _cpu_threads(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[int, str]:
    cores = max(hardware.cpu_cores, 1)
    if values["device"] != "cpu":
        return cores, f"{values['device']} run: torch's default, one thread per core"
    if values["training"]["num_processes"] > 1:
        return 1, "one thread per process of a multi-process CPU run (as torchrun starts them)"
    table = hardware.cpu_thread_ms.get(values["training"]["precision"]) or {}
    if not table:
        return cores, "thread counts not measured on this machine: torch's default, one thread per core"
    width = _hidden_size(values) or 512
    probed = min(table, key=lambda w: abs(math.log(int(w) / width)))
    timings = {int(count): ms for count, ms in table[probed].items()}
    best = min(timings, key=timings.get)
    figures = ", ".join(f"{count} thread{'s' if count > 1 else ''} {ms:.1f} ms" for count, ms in sorted(timings.items()))
    return best, (f"probe block of width {probed} in {values['training']['precision']}, measured on this machine: {figures} "
                  "per step: the faster, the same on every run here (cached with the precision probe; runs at "
                  "another count differ in the last bits of their floats)")


def _gradient_checkpointing(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    if values["device"] == "cpu":
        return "off", "CPU run: time, not memory, is the limit; recomputing activations costs ~30% per step"
    fit = _fit_without_checkpointing(values, hardware)
    if fit is None:
        return "on", "accelerator run: trades ~30% step time for a large cut in activation memory; set off when memory allows"
    without, device = fit
    if without <= device:
        return "off", (f"predicted peak {format_gib(without)} without it fits the {format_gib(device, 0)} device: "
                       "no recomputation, ~30% faster steps")
    return "on", (f"predicted peak {format_gib(without)} without it exceeds the {format_gib(device, 0)} device: "
                  "recompute activations in backward (~30% slower, far less memory)")


def _fit_without_checkpointing(values: dict[str, Any], hardware: HardwareProfile) -> tuple[int, int] | None:
    """(predicted peak without checkpointing, device memory), or None when either is unknown."""
    if not hardware.device_memory:
        return None
    trial = _with_training(values, gradient_checkpointing="off")
    try:
        return estimate_memory(trial, micro_batch_size=_planned_micro_batch(values)).total_bytes, hardware.device_memory
    except UserError:
        return None


def _micro_batch_size(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[int, str]:
    cap = AUTO_MICRO_BATCH_CAP.get(values["device"], AUTO_MICRO_BATCH_CAP["cuda"])
    try:
        size, estimate = largest_fitting_micro_batch(_with_training(values), hardware, cap)
    except UserError:
        return 1, "no architecture numbers to estimate memory with: 1 (train probes the device for more)"
    device = format_gib(hardware.device_memory, 0)
    if estimate is None:
        return 1, f"even micro-batch 1 is predicted not to fit the {device} device (see the memory warning)"
    limit = f"the cap for {values['device']} runs" if size == cap else "the largest power of two that fits"
    reason = f"{limit}: predicted peak {format_gib(estimate.total_bytes)} of {device} (train measures it with probes first)"
    if values.get("objective", "sft") == "grpo":
        return _whole_groups(size, values["grpo"]["num_generations"], reason)
    return size, reason


def _whole_groups(size: int, generations: int, reason: str) -> tuple[int, str]:
    """GRPO's micro-batch counts completions: a multiple of num_generations keeps each prompt's
    group in one micro-batch (and the generation batch divisible by it, TRL's rule)."""
    whole = max(size // generations, 1) * generations
    if whole == size:
        return size, f"{reason}; a multiple of grpo.num_generations={generations}"
    return whole, (f"{reason} gives {size}, taken to {whole}, the {'largest multiple' if whole < size else 'one group'} "
                   f"of grpo.num_generations={generations} (prompt groups stay whole; train's probes check it fits)")


def _planned_micro_batch(values: dict[str, Any]) -> int:
    value = values["training"]["micro_batch_size"]
    return value if isinstance(value, int) else 1


def _with_training(values: dict[str, Any], **training: Any) -> RunConfig:
    return RunConfig.model_validate({**values, "training": {**values["training"], **training}})


def _attention(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    half = values["training"]["precision"] in ("bf16", "fp16")
    if values["device"] == "cuda" and hardware.flash_attention_available and half:
        return "flash_attention_2", "flash-attn is installed and the run is in half precision"
    if values["device"] == "cuda" and not hardware.flash_attention_available:
        return "sdpa", "flash-attn is not installed: PyTorch's fused scaled-dot-product attention"
    return "sdpa", "PyTorch's fused scaled-dot-product attention (flash-attn needs a CUDA GPU in half precision)"


def _loss_impl(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    if values.get("objective", "sft") == "orpo":
        return "plain", ("objective=orpo: trl.experimental's ORPOTrainer takes the model's full logits for chosen and "
                         "rejected")
    if values.get("objective", "sft") != "sft":
        return "chunked", (f"objective={values['objective']}: TRL's trainer always scores its log-probs with its fused "
                           "LM head (4096-token tiles, never the full logits)")
    # Before gradient checkpointing resolves: an `auto` one is taken as off, the larger estimate.
    checkpointing = values["training"]["gradient_checkpointing"]
    try:
        config = _with_training(values, loss_impl="plain",
                                gradient_checkpointing="off" if checkpointing == "auto" else checkpointing)
        head_targeted = any(layer.name == "lm_head" for layer in targeted_layers(architecture_of(config), config.peft))
    except UserError:
        return "plain", "no architecture numbers: the model's own loss over the full logits"
    if head_targeted:
        return "plain", ("lm_head carries an adapter, and TRL's fused head projects with the base weight alone: "
                         "the loss takes the full logits")
    if values["device"] == "cuda":
        return "chunked", ("CUDA: TRL's fused LM head (Triton) scores 4096-token tiles and never holds the logits; "
                           f"plain would hold {format_gib(_logit_bytes(config, values))} of them")
    plain = estimate_memory(config, micro_batch_size=_planned_micro_batch(values)).total_bytes
    if not hardware.device_memory or plain <= hardware.device_memory:
        return "plain", (f"{values['device']} run that fits with the full logits ({format_gib(_logit_bytes(config, values))}"
                         f", predicted peak {format_gib(plain)}): the chunked head's PyTorch tiles measured 2-3x slower "
                         "per loss here (benchmarks/loss_impl.py)")
    return "chunked", (f"the full logits would not fit (predicted peak {format_gib(plain)} of "
                       f"{format_gib(hardware.device_memory, 0)}): the loss scores 4096-token tiles instead")


def _logit_bytes(config: RunConfig, values: dict[str, Any]) -> int:
    return estimate_memory(config, micro_batch_size=_planned_micro_batch(values)).components["logits and loss"]


def _packing(values: dict[str, Any], hardware: HardwareProfile, waste: float | None) -> tuple[str, str]:
    # Packing here is padding-free batching: a micro-batch's samples are concatenated into one
    # row with position_ids restarting at 0 per sample. transformers builds a block-diagonal
    # causal mask from those position_ids for sdpa and eager (masking_utils.
    # find_packed_sequence_indices) and flash_attention_2 runs them as separate varlen
    # sequences, so packed samples never attend to each other with any of the three.
    if values.get("objective", "sft") != "sft":
        return "off", f"objective={values['objective']}: its TRL trainer pads its own batches (packing is for sft)"
    measured = f"{waste:.1%} of tokens would be padding at micro-batch {values['training']['micro_batch_size']}" \
        if waste is not None else "padding waste not measured"
    if waste is not None and waste > PACKING_WASTE_THRESHOLD:
        return "on", (f"{measured} (above {PACKING_WASTE_THRESHOLD:.0%}): samples are packed padding-free, kept apart "
                      f"by position_ids with {values['training']['attention']}")
    return "off", f"{measured} (at most {PACKING_WASTE_THRESHOLD:.0%}: not worth packing)"


def cpu_fast_paths(config: RunConfig, hardware: HardwareProfile) -> dict[str, str]:
    """The faster kernels a CPU run uses (model/fast_paths.py), each with what it changes; the
    plan prints them, train applies exactly these (`hardware`: the plan's, whose probes decide)."""
    if config.device != "cpu":
        return {}
    paths = {}
    precision = "bf16" if config.training.precision == "bf16" else "fp32"
    attention = hardware.cpu_attention_ms.get(precision, {})
    if (config.training.packing == "on" and config.training.attention == "sdpa" and attention
            and attention["per_sample"] < attention["masked"]):
        paths["packed_attention"] = (
            f"packed rows attend sample by sample, one causal SDPA call each in fp32: {attention['per_sample']:g} ms "
            f"vs {attention['masked']:g} ms for one {precision} call under the row's block-diagonal mask, measured on "
            "this CPU (a row of 8 samples, 739 tokens, forward and backward; cached with the precision probe): the "
            + ("same attention, more exact than bf16" if precision == "bf16" else "same attention"))
    if config.peft.dropout > 0:
        paths["masked_dropout"] = ("LoRA dropout masks drawn with numpy's SFC64 generator seeded from torch's: the "
                                   "same keep probability and scale, another random stream than nn.Dropout's "
                                   "(whose one-element-at-a-time CPU masks measured ~4x slower)")
    if config.training.precision == "bf16":
        paths["autocast_inputs"] = ("LoRA inputs go to the adapters in bf16 under autocast, not through fp32 first "
                                    "(the autocast matmul casts them straight back: same result, two copies fewer)")
    return paths


def _compute_dtype(values: dict[str, Any], hardware: HardwareProfile, _waste: float | None) -> tuple[str, str]:
    precision = values["training"]["precision"]
    if values["peft"]["quantization"] == "none":
        return precision, f"follows training.precision={precision} (unused: the base model is not quantized)"
    return precision, (f"follows training.precision={precision}: quantized weights are dequantized to the dtype "
                       "the rest of the model computes in")


# Order matters: each rule may read the values the rules before it resolved.
RULES = (
    ("platform", _platform),
    ("device", _device),
    ("training.precision", _precision),
    ("peft.compute_dtype", _compute_dtype),
    ("training.attention", _attention),
    ("training.loss_impl", _loss_impl),
    ("training.cpu_threads", _cpu_threads),
    ("training.gradient_checkpointing", _gradient_checkpointing),
    ("training.micro_batch_size", _micro_batch_size),
    ("training.packing", _packing),
)
