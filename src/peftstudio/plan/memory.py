"""Peak training memory of a run, predicted from architecture numbers alone (pure arithmetic:
no torch, no weights, no download).

The peak is reached at the start of the backward pass of a later step: every weight, the
adapter, its gradients and optimizer states, every activation saved for backward, the logits
with their fp32 loss copies, and the framework's own memory. Each of those is one component
of `MemoryEstimate.components`, so a user sees which lever (micro-batch, sequence length,
gradient checkpointing, quantization) moves which number.

Activation terms follow what PyTorch autograd actually saves for a Llama-style block with
LoRA adapters (see `_block_bytes_per_token`); they are checked on CPU against the bytes that
`torch.autograd.graph.saved_tensors_hooks` sees (tests/integration/test_memory_calibration.py) and against a
measured training step (benchmarks/estimator_cpu.py).

The estimate reads a resolved config: `plan.resolve` turns `auto` into values for a machine
first, so the arithmetic here never guesses at hardware.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from peftstudio.config.schema import ModelArchitecture, RunConfig
from peftstudio.plan.architecture import (
    adapter_parameters, architecture_of, base_parameters, head_dim, is_gemma3,
    Linear, linear_layers, quantized_layers, targeted_layers, trainable_bias_parameters, uses_dora,
)
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.adapter_memory import dora_weight_copies, head_input_bytes_per_token, lora_bytes_per_token
from peftstudio.plan.objective_memory import objective_components, sequence_length
from peftstudio.plan.runtimes import OWN_RUNTIME, Runtime
from peftstudio.units import format_gib
from peftstudio.plan.vision_memory import vision_components

__all__ = ["MemoryEstimate", "estimate_memory", "architecture_of", "largest_fitting_micro_batch",
           "FRAMEWORK_OVERHEAD_BYTES", "Runtime", "OWN_RUNTIME"]

MIB = 1024**2
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# Bits per quantized weight: NF4/FP4 store 4 bits plus one absmax per 64-weight block; double
# quantization stores that absmax in 8 bits with one fp32 constant per 256 blocks.
BITS_4BIT_DOUBLE_QUANT = 4 + 8 / 64 + 32 / (64 * 256)  # ≈ 4.127
BITS_4BIT_SINGLE_QUANT = 4 + 32 / 64  # 4.5
# Memory the framework holds that no tensor accounts for. CUDA: the context (kernels, cuBLAS
# and cuDNN handles and workspaces) is 0.4-0.6 GiB on recent GPUs and drivers, plus the caching
# allocator's fragmentation; MPS: Metal's command buffers and caches; CPU: the interpreter
# with torch, transformers and trl imported (~0.7 GiB resident, measured on this project's CPUs).
FRAMEWORK_OVERHEAD_BYTES = {"cuda": 640 * MIB, "mps": 512 * MIB, "cpu": 768 * MIB}
# The config values the arithmetic reads; each must be resolved (not `auto`) before estimating.
RESOLVED_KEYS = ("device", "training.precision", "training.attention", "training.gradient_checkpointing",
                 "training.loss_impl")
# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects this many tokens against this
# many vocabulary entries at a time.
LOSS_TILE_TOKENS, LOSS_TILE_VOCAB = 4096, 32768
# fp32 tile-sized temporaries its PyTorch fold holds at once in backward (no Triton: CPU, MPS):
# the upcast logits, their scaled copy, log p, p, the gradient and the one-hot difference.
LOSS_TILE_FP32_COPIES_TORCH = 6


# What the caching allocator holds beyond the live tensors (torch.cuda.max_memory_reserved over
# max_memory_allocated): blocks split and cached for reuse. One constant for every run, from the
# calibration against published measurements (tests/data/published_memory.json).
RESERVED_SLACK = 0.06
# What nvidia-smi shows beyond the reserved memory: the CUDA context (kernels, cuBLAS/cuDNN
# handles and workspaces), 0.4-0.6 GiB on recent GPUs and drivers.
CUDA_CONTEXT_BYTES = 512 * MIB
COUNTERS = ("allocated", "reserved", "nvidia-smi")



@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak memory of one training process, by component (bytes)."""

    total_bytes: int
    components: dict[str, int]
    total_parameters: int
    trainable_parameters: int
    micro_batch_size: int
    seq_len: int
    base_parameters: int = 0
    device: str = "cuda"
    notes: list[str] = field(default_factory=list)
    load_peak_bytes: int = 0

    def fits(self, device_bytes: int) -> bool:
        """Whether the predicted peak fits in `device_bytes` of accelerator (or RAM) memory."""
        return self.total_bytes <= device_bytes

    @property
    def tensor_bytes(self) -> int:
        """The peak without the framework overhead: what torch.cuda.max_memory_allocated measures."""
        return self.total_bytes - self.components.get("framework overhead", 0)

    def counter_bytes(self, counter: str) -> int:
        """The peak a given counter would show: `allocated` (torch.cuda.max_memory_allocated, the
        live tensors), `reserved` (max_memory_reserved: plus the allocator's cached blocks) or
        `nvidia-smi` (plus the CUDA context)."""
        reserved = int(self.tensor_bytes * (1 + RESERVED_SLACK))
        return {"allocated": self.tensor_bytes, "reserved": reserved,
                "nvidia-smi": reserved + CUDA_CONTEXT_BYTES}[counter]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Settings:
    """The resolved values the arithmetic needs."""

    arch: ModelArchitecture
    device: str
    compute_bytes: int
    quantization: str
    double_quant: bool
    attention: str
    checkpointing: bool
    dropout: bool
    optimizer: str
    loss_impl: str
    adapter_bytes: int
    dequantize_bytes: int
    quantized_inputs_saved: bool
    repeats_kv_heads: bool
    quantizes_head: bool
    holds_previous_graph: bool
    fuses_qkv: bool
    adapter_side_bytes: int


def estimate_memory(config: RunConfig, *, micro_batch_size: int | None = None, seq_len: int | None = None,
                    runtime: Runtime = OWN_RUNTIME, previous_seq_len: int | None = None) -> MemoryEstimate:
    """Predicted peak training memory of the resolved `config` for one process.

    `micro_batch_size` and `seq_len` default to the config's micro-batch and max_seq_length (the
    worst case: every sequence full). `previous_seq_len` (default `seq_len`) is the length of the
    step before the peak, read only by a runtime that holds the previous step's graph; 0 when
    the peak is the first step. Raises ValueError when a value the estimate reads is still
    `auto`: resolve the config against a hardware profile first (`plan.resolve.resolve`)."""
    settings = _settings(config, runtime)
    batch = micro_batch_size or _configured_micro_batch(config)
    seq = seq_len or sequence_length(config)  # grpo: prompt + completion
    arch, peft = settings.arch, config.peft
    base = base_parameters(arch)
    trainable = adapter_parameters(arch, peft) + trainable_bias_parameters(arch, peft)
    components = {
        "base weights": _base_weight_bytes(settings),
        "LoRA weights": settings.adapter_bytes * adapter_parameters(arch, peft),
        "gradients": settings.adapter_bytes * trainable,
        "optimizer states": _optimizer_bytes(settings, config),
        "activations": batch * (_activation_bytes_per_sequence(settings, config, seq, batch)
                                + seq * head_input_bytes_per_token(settings, config)) + dora_weight_copies(settings, config),
        **_loss_components(settings, batch * seq, batch * (seq if previous_seq_len is None else previous_seq_len)),
        "framework overhead": FRAMEWORK_OVERHEAD_BYTES.get(settings.device, FRAMEWORK_OVERHEAD_BYTES["cuda"]),
    }
    components = objective_components(config, components, batch, seq, lambda length, b: _activation_bytes_per_sequence(
        settings, config, length, b), lambda tokens: _loss_bytes(settings, tokens), settings.compute_bytes)  # dpo/kto/grpo
    components.update(vision_components(config, batch))  # image-text models (plan/vision_memory.py)
    components = {name: int(value) for name, value in components.items()}
    return MemoryEstimate(sum(components.values()), components, base + adapter_parameters(arch, peft), trainable,
                          batch, seq, base, settings.device, _notes(settings, config), _load_peak_bytes(settings))


def largest_fitting_micro_batch(config: RunConfig, hardware: HardwareProfile, cap: int = 64,
                                device_bytes: int | None = None) -> tuple[int, MemoryEstimate | None]:
    """The largest power-of-two micro-batch up to `cap` predicted to fit one device of
    `hardware` (or `device_bytes`), with its estimate; (1, None) when not even 1 fits."""
    limit = device_bytes if device_bytes is not None else hardware.device_memory
    best: tuple[int, MemoryEstimate | None] = (1, None)
    size = 1
    while size <= cap:
        estimate = estimate_memory(config, micro_batch_size=size)
        if not estimate.fits(limit):
            break
        best = (size, estimate)
        size *= 2
    return best


def _configured_micro_batch(config: RunConfig) -> int:
    value = config.training.micro_batch_size
    if value == "auto":
        raise ValueError("training.micro_batch_size is auto: pass micro_batch_size, or estimate a resolved config")
    return value


def _settings(config: RunConfig, runtime: Runtime = OWN_RUNTIME) -> _Settings:
    for key in RESOLVED_KEYS:
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value == "auto":
            raise ValueError(f"{key} is auto: the memory estimate takes a resolved config (plan.resolve.resolve)")
    training = config.training
    precision, quantization = PRECISION_BYTES[training.precision], quantization_of(config)
    upcast = runtime.upcast_unquantized and quantization != "none"
    return _Settings(
        arch=architecture_of(config),
        device=config.device,
        # peft's kbit preparation puts everything that is not 4-bit in fp32, activations included
        compute_bytes=4 if upcast else precision,
        quantization=quantization,
        double_quant=bool(getattr(config.peft, "double_quant", True)),
        attention=training.attention,
        checkpointing=training.gradient_checkpointing == "on",
        dropout=config.peft.dropout > 0,
        optimizer=config.optim.name,
        loss_impl=training.loss_impl if runtime.loss == "config" else runtime.loss,
        adapter_bytes=runtime.adapter_bytes or 4,
        # fp16-quantized weights dequantize to fp16 and are then copied to compute precision
        dequantize_bytes=precision + (2 if runtime.dequantizes_from_fp16 else 0),
        quantized_inputs_saved=runtime.quantized_layers_save_input and quantization != "none",
        repeats_kv_heads=runtime.repeats_kv_heads,
        quantizes_head=runtime.quantizes_head and quantization != "none",
        holds_previous_graph=runtime.holds_previous_graph,
        fuses_qkv=runtime.fuses_qkv,
        # what the adapter path computes in: autocast's compute precision, else the adapter dtype
        adapter_side_bytes=(4 if upcast else precision) if runtime.autocast else (runtime.adapter_bytes or 4),
    )


def quantization_of(config: RunConfig) -> str:
    """nf4 / fp4 / int8 / none; QLoRA and QDoRA mean NF4 even where the key is not set."""
    value = str(getattr(config.peft, "quantization", "none") or "none")
    if value == "none" and config.peft.method in ("qlora", "qdora"):
        return "nf4"
    return value


def _quantized(settings: _Settings) -> list[Linear]:
    """The layers the stack quantizes: the blocks' nn.Linear layers, and the head where the
    runtime quantizes it too (an untied one; a tied head is the embedding matrix)."""
    arch = settings.arch
    head = [layer for layer in linear_layers(arch) if layer.name == "lm_head" and not arch.tie_embeddings]
    return quantized_layers(arch) + (head if settings.quantizes_head else [])


def _base_weight_bytes(settings: _Settings) -> float:
    arch, compute = settings.arch, settings.compute_bytes
    total = base_parameters(arch)
    if settings.quantization == "none":
        return total * compute
    layers = _quantized(settings)
    quantized = sum(layer.per_model * layer.weight_count for layer in layers)
    if settings.quantization == "int8":
        # LLM.int8: one byte per weight plus an fp32 scale per output row.
        rows = sum(layer.per_model * layer.out_features for layer in layers)
        quantized_bytes = quantized + 4 * rows
    else:
        bits = BITS_4BIT_DOUBLE_QUANT if settings.double_quant else BITS_4BIT_SINGLE_QUANT
        quantized_bytes = quantized * bits / 8
    return quantized_bytes + (total - quantized) * compute + _dequantized_bytes(settings)


def _load_peak_bytes(settings: _Settings) -> int:
    """Weights on the device while loading: transformers moves one checkpoint tensor at a time
    and bitsandbytes quantizes it as it lands, so the peak is the finished weights plus the
    largest tensor (the embedding matrix, or the largest projection) at load precision."""
    arch = settings.arch
    weights = _base_weight_bytes(settings) - (_dequantized_bytes(settings) if settings.quantization != "none" else 0)
    if settings.quantization == "none":
        return int(weights)
    largest = max(arch.vocab_size * arch.hidden_size, *(layer.weight_count for layer in _quantized(settings)))
    return int(weights + settings.dequantize_bytes * largest)


def _dequantized_bytes(settings: _Settings) -> int:
    return settings.dequantize_bytes * max(layer.weight_count for layer in _quantized(settings))


def dequantized_weight_bytes(arch: ModelArchitecture, compute: int) -> int:
    """bitsandbytes dequantizes a layer's weight to compute precision for each matmul over many
    tokens (forward and backward): one at a time, the largest sets the transient."""
    return compute * max(layer.weight_count for layer in quantized_layers(arch))


def _optimizer_bytes(settings: _Settings, config: RunConfig) -> float:
    """Optimizer state bytes for the trainable parameters."""
    name = settings.optimizer
    trainable = adapter_parameters(settings.arch, config.peft) + trainable_bias_parameters(settings.arch, config.peft)
    if name == "sgd":
        return 0  # transformers' sgd runs without momentum
    if name == "adafactor":
        return 4 * _adafactor_state_count(settings.arch, config)
    if "8bit" in name:
        # two uint8 states plus an fp32 absmax per 256-value block of each
        return trainable * 2 * (1 + 4 / 256)
    return trainable * 2 * settings.adapter_bytes  # AdamW: exp_avg and exp_avg_sq in the adapter's dtype


def _adafactor_state_count(arch: ModelArchitecture, config: RunConfig) -> int:
    """Factored second moments: rows + columns per matrix, full size per vector."""
    peft, count = config.peft, 0
    for layer in targeted_layers(arch, peft):
        per_layer = (peft.r + layer.in_features) + (layer.out_features + peft.r)
        per_layer += layer.out_features if uses_dora(peft) else 0
        count += layer.per_model * per_layer
    return count + trainable_bias_parameters(arch, peft)


def _norm_bytes_per_token(width: int) -> int:
    """RMSNorm with a frozen weight saves only its fp32 input (upcast) and 1/rms per row."""
    return 4 * width + 4


def _block_bytes_per_token(settings: _Settings, config: RunConfig, padded: bool) -> int:
    """Bytes one decoder block saves for backward, per token (attention probabilities and
    the mask are per sequence, see below). Frozen projections save nothing themselves; RoPE
    saves only cos/sin."""
    arch, c = settings.arch, settings.compute_bytes
    mlp = 3 * c * arch.intermediate_size  # gate output (for the activation's backward), activation output, up output
    adapters = lora_bytes_per_token([layer for layer in targeted_layers(arch, config.peft) if layer.name != "lm_head"],
                                     settings, config)
    return _attention_side_bytes_per_token(settings, padded) + mlp + adapters + _quantized_inputs_per_token(settings)


def _attention_side_bytes_per_token(settings: _Settings, padded: bool) -> int:
    """The norms' and the attention's saved tensors of one block, per token."""
    arch, c = settings.arch, settings.compute_bytes
    h = arch.hidden_size
    q_dim, kv_dim = arch.num_heads * head_dim(arch), arch.num_kv_heads * head_dim(arch)
    # Eager attention, and sdpa once a padding mask exists, repeat the kv heads to all query
    # heads; flash-attention and unmasked sdpa read them grouped.
    repeats = settings.attention == "eager" or (settings.attention == "sdpa" and padded) or settings.repeats_kv_heads
    kv_seen = q_dim if repeats else kv_dim
    norms = (4 if is_gemma3(arch) else 2) * _norm_bytes_per_token(h)
    if is_gemma3(arch):  # q_norm and k_norm run per head
        norms += 4 * (q_dim + kv_dim) + 4 * (arch.num_heads + arch.num_kv_heads)
    attention = c * (q_dim + 2 * kv_seen)
    if settings.fuses_qkv and arch.num_kv_heads == arch.num_heads:
        attention += c * (q_dim + kv_dim)  # the saved value view pins the fused q/k/v output
    if settings.attention != "eager":
        attention += c * q_dim + 4 * arch.num_heads  # fused kernels keep their output and logsumexp
    return norms + attention


def _untracked_first_block(settings: _Settings, config: RunConfig, seq_len: int, padded: bool) -> int:
    """Autograd saves nothing upstream of the first trainable tensor: with no adapter on the
    attention (MLP-only targets) the first block's norms and attention see no input that
    requires grad, so they save nothing (its 4-bit matmuls before the MLP product neither)."""
    attention_side = ("attention input", "attention output")
    if any(layer.reads in attention_side for layer in targeted_layers(settings.arch, config.peft)):
        return 0
    arch, c = settings.arch, settings.compute_bytes
    quantized = _quantized_inputs_per_token(settings) - (c * arch.intermediate_size if settings.quantized_inputs_saved
                                                         else 0)
    return (seq_len * (_attention_side_bytes_per_token(settings, padded) + quantized)
            + _per_sequence_block_bytes(settings, seq_len))


def _quantized_inputs_per_token(settings: _Settings, held: bool = False) -> int:
    """What a 4-bit matmul that saves its input keeps per block and token: the attention input,
    the attention output, the MLP input and the MLP product. The attention output is the fused
    kernel's own saved output where the kernel writes it tokens-first (flash-attention 2, and
    sdpa's flash and memory-efficient kernels on CUDA: the model's transpose back is then a
    view); eager attention and sdpa on CPU write it heads-first, so the transpose copies it.
    `held`: a previous step's graph whose kernel outputs were freed by backward, where the 4-bit
    matmul's view alone keeps the attention output alive."""
    if not settings.quantized_inputs_saved:
        return 0
    arch, c = settings.arch, settings.compute_bytes
    tokens_first = settings.attention == "flash_attention_2" or (settings.attention == "sdpa" and settings.device == "cuda")
    attention_output = 0 if tokens_first and not held else arch.num_heads * head_dim(arch)
    return c * (2 * arch.hidden_size + arch.intermediate_size + attention_output)


def _previous_step_bytes(settings: _Settings, tokens: int) -> int:
    """What the previous step leaves alive into this step's forward when the loop holds its
    graph: the inputs its 4-bit matmuls kept on ctx (every block, and the head) and its logits
    (fp32 after Fabric's output cast, else at compute precision)."""
    if not settings.holds_previous_graph or not tokens:
        return 0
    arch, c = settings.arch, settings.compute_bytes
    inputs = arch.num_layers * _quantized_inputs_per_token(settings, held=True)
    if settings.quantizes_head and settings.quantized_inputs_saved:
        inputs += c * arch.hidden_size
    logits = 4 if settings.loss_impl == "fp32-output" else c
    return tokens * (inputs + logits * arch.vocab_size)


def _per_sequence_block_bytes(settings: _Settings, seq_len: int) -> int:
    """Eager attention keeps the softmax probabilities (fp32, plus a compute-precision copy);
    fused kernels keep none."""
    if settings.attention != "eager":
        return 0
    c = settings.compute_bytes
    return settings.arch.num_heads * seq_len * seq_len * (4 + (c if c != 4 else 0))


def _activation_bytes_per_sequence(settings: _Settings, config: RunConfig, seq_len: int, micro_batch: int) -> int:
    """All blocks' saved activations for one sequence. With gradient checkpointing only each
    block's input is kept; one block is recomputed at a time during backward, after the
    logits and their gradients are gone, so it adds only what it needs beyond them. Shared by
    all blocks: RoPE's cos/sin tables and, when a batch of several sequences is padded, the
    additive attention mask (a batch of one is never padded, and sdpa then needs no mask)."""
    arch, c = settings.arch, settings.compute_bytes
    padded = micro_batch > 1
    block = seq_len * _block_bytes_per_token(settings, config, padded) + _per_sequence_block_bytes(settings, seq_len)
    mask = c * seq_len * seq_len if settings.attention != "flash_attention_2" and padded else 0
    shared = mask + 2 * c * seq_len * head_dim(arch)
    if settings.checkpointing:
        # the recomputed block's backward also holds gradients of its widest (MLP) tensors;
        # DoRA's magnitude path doubles them (calibrated on CPU, benchmarks/estimator_cpu.py)
        gradients = 2 * c * arch.intermediate_size * seq_len * (2 if uses_dora(config.peft) else 1)
        freed_by_loss = _loss_bytes(settings, micro_batch * seq_len) // micro_batch
        recompute_beyond_logits = max(0, block + gradients - freed_by_loss)
        return arch.num_layers * c * arch.hidden_size * seq_len + recompute_beyond_logits + shared
    return arch.num_layers * block + shared - _untracked_first_block(settings, config, seq_len, padded)


def _loss_bytes(settings: _Settings, tokens: int) -> int:
    """The final norm and the loss over `tokens` positions at the start of backward.

    plain: the logits (kept by the model output), the log-softmax output of the fp32 loss, and
    its incoming and outgoing fp32 gradients. chunked (TRL's fused head): the head's input (a
    copy of the final hidden states), per-token log Z, log-probabilities and entropy, the fp32
    gradient of the hidden states it accumulates, and one tile of logits (with the fp32
    temporaries of the PyTorch fold where there is no Triton)."""
    arch, c = settings.arch, settings.compute_bytes
    norm = tokens * _norm_bytes_per_token(arch.hidden_size)
    if settings.loss_impl == "plain":
        return norm + tokens * (c + 12) * arch.vocab_size
    if settings.loss_impl == "compute":
        # logits, the saved log-softmax, and in backward their gradient in and out, all at c
        return norm + tokens * 4 * c * arch.vocab_size
    if settings.loss_impl == "fp32-logits":
        # transformers <= 4.44 LlamaForCausalLM: logits.float() kept in the output, a shifted
        # contiguous copy for the loss (freed once log-softmax ran), the fp32 log-softmax, and in
        # backward its gradient in and out
        return norm + tokens * 16 * arch.vocab_size
    if settings.loss_impl == "fp32-output":
        # the fp32 copy of the logits and the fp32 log-softmax the cross-entropy saves (the
        # compute-precision logits are freed once cast; the loss runs per chunk of 128 tokens)
        return norm + tokens * 8 * arch.vocab_size
    tile = min(tokens, LOSS_TILE_TOKENS) * min(arch.vocab_size, LOSS_TILE_VOCAB)
    tile_bytes = tile * (c + (0 if settings.device == "cuda" else 4 * LOSS_TILE_FP32_COPIES_TORCH))
    per_token = c * arch.hidden_size + 4 * arch.hidden_size + 4 * 4
    return norm + tokens * per_token + tile_bytes


def _loss_components(settings: _Settings, tokens: int, previous_tokens: int) -> dict[str, int]:
    """The loss at the start of backward, or, where the loop still holds the previous step
    while this forward returns, that moment when it is the larger: the previous step's tensors
    plus the logits as the forward returns them. Under Fabric's output cast both the
    compute-precision logits and their fp32 copy exist then; before the cast, while the last
    chunk of the head runs, the head's dequantized weight (already in base weights) does."""
    loss = _loss_bytes(settings, tokens)
    held = _previous_step_bytes(settings, previous_tokens)
    if not held:
        return {"logits and loss": loss}
    norm = tokens * _norm_bytes_per_token(settings.arch.hidden_size)
    logits = tokens * settings.arch.vocab_size
    c = settings.compute_bytes
    if settings.loss_impl == "fp32-output":
        dequantized = _dequantized_bytes(settings) if settings.quantization != "none" else 0
        returned = norm + max(c * logits, (c + 4) * logits - dequantized)
    elif settings.loss_impl == "plain":  # a loss inside the forward: logits, fp32 copy, log-softmax
        returned = norm + (c + 8) * logits
    elif settings.loss_impl == "compute":
        returned = norm + 2 * c * logits
    else:
        returned = loss
    if returned + held <= loss:
        return {"logits and loss": loss}
    return {"logits and loss": returned, "previous step (held)": held}


def _notes(settings: _Settings, config: RunConfig) -> list[str]:
    notes = []
    copies = dora_weight_copies(settings, config)
    if copies:
        notes.append(f"DoRA with dropout: peft recomputes the base output from the dropped-out input and keeps a copy of "
                     f"every adapted weight for backward ({format_gib(copies)} here); peft.dropout=0 avoids it")
    if "paged" in settings.optimizer:
        notes.append("paged optimizer: its states may be evicted to CPU RAM under pressure, so the GPU peak can be lower")
    if settings.quantization != "none":
        notes.append(f"{settings.quantization} base weights; embeddings, norms and the output head stay at compute "
                     "precision (peftstudio does not cast them to fp32 as peft's prepare_model_for_kbit_training would)")
    return notes

