"""The CPU time model: one micro-batch step of the run's own model shape, timed on this machine.

A CPU step of a small model is not its FLOPs at a matmul rate: element-wise work, attention,
LoRA dropout masks and the Python around every module take most of it, in proportions that
change with the width, the precision, the CPU and its thread count. So plan times the step
itself, on a stand-in of the run's model (same family,
widths, heads and vocabulary; random weights in the run's precision), wearing the run's adapter
(method, rank, targets, dropout), with its precision, autocast, kernels (plan.resolve.
cpu_fast_paths), thread count and gradient checkpointing, on a micro-batch of the run's shape
(samples × tokens, packed or padded to the data's mean length): forward, backward, gradient
clipping and a fused AdamW step, as train runs them. A model of up to 4 blocks is timed whole. A deeper one is timed with
2 and with 4 blocks: half their difference is one block, and the step is the 4-block step + each
further block. Not 1 and 2: the first block is cheaper than the others (nothing before it needs
the gradient of its input), and on a 26M Llama per-block time still grows from the second block
to the fourth (65 vs 93 ms a block: 1-and-2 predicted 555 ms for the 8-block step that took 710,
2-and-4 predicted 723).

Measured once per machine and run shape, then read from the cache
(`cache_root()/cpu-step-probes/`), so `plan` says the same on every run of one config here;
deleting the directory measures again (a figure taken while other processes loaded the CPU
stays until then, as the other CPU probes do). Not measured (None: the FLOP model answers) for
quantized bases, image-text runs, GRPO (its step is mostly generation), families outside the Llama-style
ones, and stand-ins too large to time in a few seconds. A micro-batch too large to time whole
is timed on as many of its rows as fit the budget and scaled by the rows: an upper bound, since
a step's fixed part (the head's log-softmax over a large vocabulary, the optimizer) does not
grow with them (Qwen2.5-0.5B shape, 2 blocks: 270 ms for 2 rows of 62 tokens, 447 ms for 4).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.schema import ModelArchitecture, RunConfig
from peftstudio.plan.architecture import LLAMA_STYLE, architecture_of, base_parameters, head_dim
from peftstudio.plan.hardware import HardwareProfile, alternating_medians, probe_machine_key
from peftstudio.plan.throughput import PASSES

PROBE_DIR = "cpu-step-probes"
# Stand-ins past these sizes take too long to build and time at plan time.
MAX_PARAMETERS = 400_000_000
MAX_STEP_FLOPS = 4e11
REPEATS = 5
DEEPEST = 4  # blocks of the largest stand-in timed


@dataclass(frozen=True)
class CpuStepTiming:
    """A CPU micro-batch step of the run's model: the step of a `timed_layers`-block stand-in,
    `timed_seconds`, + `layer_seconds` for each further block of the model's `layers`."""

    timed_seconds: float
    timed_layers: int
    layer_seconds: float
    layers: int
    tokens: float  # the micro-batch's tokens (padded length unless packed)

    @property
    def seconds(self) -> float:
        return self.timed_seconds + (self.layers - self.timed_layers) * self.layer_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def cpu_step_timing(config: RunConfig, hardware: HardwareProfile, samples: int, seq_len: float,
                    mean_tokens: float | None = None, cache_dir: Path | None = None,
                    measure: bool = True) -> CpuStepTiming | None:
    """The step of `samples` sequences of `seq_len` tokens on this CPU (see the module doc), or
    None where it is not measured. Unpacked, `mean_tokens` (default `seq_len`) of them are real
    tokens on average and the rest padding: the rows' lengths then spread evenly from `seq_len`
    down, so that the attention mask is a padded batch's, as train's batches are. `measure=False`
    reads the cache only (the studio, whose server may share the CPU with a training job)."""
    from peftstudio.plan.resolve import cpu_fast_paths

    arch = architecture_of(config)
    length = max(int(round(seq_len)), 1)
    timed = _timed_samples(config, hardware, arch, samples, length)
    if timed is None:
        return None
    paths = sorted(cpu_fast_paths(config, hardware))
    lengths = _row_lengths(timed, length, length if mean_tokens is None or config.training.packing == "on"
                           else min(mean_tokens, length))
    shape = _shape(config, arch, paths, lengths)
    path = _cache_path(cache_dir, shape)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        measured = cached["timing"] if cached.get("shape") == shape else None
    except (OSError, ValueError, KeyError):
        measured = None
    if measured is None and not measure:
        return None
    if measured is None:
        from peftstudio.files import write_json

        try:
            measured = _measure(config, arch, paths, lengths)
        except Exception:  # noqa: BLE001 - a stand-in this family cannot build: the FLOP model answers, and says so
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"shape": shape, "timing": measured})
    scale = samples / timed  # a large model's micro-batch timed in part: its time grows with its rows
    trained = PASSES[config.objective][0]  # tokens as a run logs them: both sequences of a pair
    return CpuStepTiming(measured["step_ms"] / 1e3 * scale, measured["blocks"], measured["block_ms"] / 1e3 * scale,
                         arch.num_layers, samples * length * trained)


def _timed_samples(config: RunConfig, hardware: HardwareProfile, arch: ModelArchitecture, samples: int,
                   length: int) -> int | None:
    """How many of the micro-batch's `samples` rows the stand-in is timed on: all of them while its
    deepest step stays under MAX_STEP_FLOPS, else as many as do (a 0.5B model's step is its
    matmuls: its time grows with the rows); None when the run is not timed here."""
    if hardware.accelerator != "cpu" or config.device != "cpu" or config.objective not in PASSES:
        return None
    if not hardware.cpu_thread_ms:  # a profile of another machine (or a fake one): nothing to time here
        return None
    if config.peft.quantization != "none" or arch.vision is not None or arch.num_experts:
        return None
    if arch.model_type not in LLAMA_STYLE + ("gemma3",):
        return None
    parameters = base_parameters(arch.model_copy(update={"num_layers": min(arch.num_layers, DEEPEST)}))  # the stand-in
    trained, policy_forwards, reference_forwards = PASSES[config.objective]
    fitting = int(MAX_STEP_FLOPS // ((6 * trained + 2 * (policy_forwards + reference_forwards)) * parameters * length))
    if parameters > MAX_PARAMETERS or fitting < 1:
        return None
    return min(samples, fitting)


def _row_lengths(samples: int, length: int, mean: float) -> list[int]:
    """`samples` lengths from `length` down, evenly spaced, averaging `mean` (to rounding)."""
    if samples == 1:
        return [length]
    spread = 2 * (length - mean)
    return [max(round(length - spread * i / (samples - 1)), 1) for i in range(samples)]


def _shape(config: RunConfig, arch: ModelArchitecture, paths: list[str], lengths: list[int]) -> dict:
    """Everything the measured step depends on: another value of any of them measures again."""
    from peftstudio.model.fast_paths import REVISION

    peft, training = config.peft, config.training
    return {
        "machine": probe_machine_key(), "objective": config.objective, "threads": training.cpu_threads,
        "precision": training.precision,
        "architecture": arch.model_dump(mode="json"), "lengths": lengths,
        "packing": training.packing, "attention": training.attention, "kernels": paths, "kernel_revision": REVISION,
        "gradient_checkpointing": training.gradient_checkpointing,
        "adapter": {"r": peft.r, "dropout": peft.dropout, "targets": peft.target_modules, "dora": peft.use_dora,
                    "bias": peft.bias, "rslora": peft.use_rslora},
    }


def _cache_path(cache_dir: Path | None, shape: dict) -> Path:
    from peftstudio.settings import cache_root

    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]
    return (cache_dir or cache_root()) / PROBE_DIR / f"{digest}.json"


def _measure(config: RunConfig, arch: ModelArchitecture, paths: list[str], lengths: list[int]) -> dict:
    """Median ms of the stand-in's step at the model's depth (up to DEEPEST blocks), else at 2 and
    DEEPEST blocks, alternating (so a moment of load from other processes falls on both), after
    two warm-ups each: {"blocks", "step_ms" at that many blocks, "block_ms" of each further one}.
    The caller's RNG states and thread count are left as they were."""
    import random

    import numpy as np
    import torch

    depths = [arch.num_layers] if arch.num_layers <= DEEPEST else [2, DEEPEST]
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(config.training.cpu_threads)
        steps = {depth: _stand_in_step(config, arch, paths, depth, lengths) for depth in depths}
        warm = alternating_medians(steps, 2)  # two warm-up rounds, whose time sizes the measurement
        repeats = REPEATS if 2 * sum(warm.values()) < 1.0 else 3  # a large stand-in: plan stays quick
        seconds = alternating_medians(steps, repeats)
    finally:
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    medians = {depth: median * 1e3 for depth, median in seconds.items()}
    block = (medians[depths[-1]] - medians[depths[0]]) / (depths[-1] - depths[0]) if len(depths) > 1 else 0.0
    return {"blocks": depths[-1], "step_ms": round(medians[depths[-1]], 3), "block_ms": round(max(block, 0.0), 3),
            "timed_ms": {str(depth): round(ms, 3) for depth, ms in medians.items()}}


def _stand_in_step(config: RunConfig, arch: ModelArchitecture, paths: list[str], layers: int, lengths: list[int]):
    """A training step of the run's model family cut to `layers` blocks, random weights, the run's
    adapter, precision, kernels and checkpointing, on one micro-batch of random tokens: rows of
    `lengths`, packed into one row or padded to the longest, each row as many sequences as the
    objective trains and scores (PASSES)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from peftstudio.model.fast_paths import apply_fast_paths, attention_implementation
    from peftstudio.model.load import DTYPES, attach_adapter

    training = config.training
    family = "gemma3_text" if arch.model_type == "gemma3" else arch.model_type
    hf_config = AutoConfig.for_model(
        family, vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
        head_dim=head_dim(arch), tie_word_embeddings=arch.tie_embeddings, attention_bias=arch.attention_bias,
        max_position_embeddings=max(arch.max_position_embeddings, max(lengths)), use_cache=False)
    hf_config._attn_implementation = attention_implementation(paths, training.attention)
    dtype = getattr(torch, DTYPES[training.precision])
    base = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    peft = config.peft.model_copy(update={"init": "default", "init_adapter": None})  # PiSSA's SVD: not per step
    model = attach_adapter(base, peft, config.seed, training.gradient_checkpointing == "on")
    apply_fast_paths(model, paths)
    if training.gradient_checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    generator = torch.Generator().manual_seed(0)
    trained, policy_forwards, reference_forwards = PASSES[config.objective]
    lengths = lengths * trained  # a preference pair: both sequences at the pair's measured length
    if reference_forwards:  # DPO, KTO: TRL's disable_dropout, which their reference scoring needs
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    if training.packing == "on":
        ids = torch.randint(0, arch.vocab_size, (1, sum(lengths)), generator=generator)
        inputs = {"input_ids": ids, "position_ids": torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)}
        labels = ids
    else:
        ids = torch.randint(0, arch.vocab_size, (len(lengths), max(lengths)), generator=generator)
        mask = (torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
        inputs = {"input_ids": ids, "attention_mask": mask}
        labels = ids.masked_fill(mask == 0, -100)
    autocast = training.precision == "bf16"

    def step() -> None:
        # What transformers' Trainer walks the model for on every step: train mode, and the
        # parameter count behind its total_flos (about a millisecond each on the embedded model).
        model.train()
        model.num_parameters(exclude_embeddings=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**inputs, labels=labels, use_cache=False).loss
        loss.backward()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(policy_forwards // trained):
                model(**inputs, use_cache=False)
            with model.disable_adapter():
                for _ in range(reference_forwards // trained):
                    model(**inputs, use_cache=False)
        if config.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
