"""Load the tokenizer and base model, and attach the adapter the plan asks for.

LoRA, DoRA, rsLoRA, PiSSA, OLoRA, QLoRA and QDoRA are one peft `LoraConfig` with different
flags, plus a bitsandbytes quantization config for the quantized methods — not a family of
classes.
"""

from __future__ import annotations

from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelSettings, PeftSettings
from peftstudio.data.tokenizer import load_tokenizer, unreachable_model  # noqa: F401  (load_tokenizer: the loaders' entry)
from peftstudio.settings import process_place

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Inits that move the principal part of each base weight into the adapter: the base the
# adapter trains against is no longer the original one, so saving must convert the adapter.
CONVERTED_INITS = ("pissa", "olora")


def model_location(settings: ModelSettings) -> str:
    """A path or hub id `from_pretrained` can load; builds the embedded model on first use."""
    if settings.name_or_path == EMBEDDED_MODEL_ID:
        from peftstudio.model.embedded import ensure_embedded_model

        return str(ensure_embedded_model())
    if settings.name_or_path == "embedded:tiny-vision":  # the embedded image-text model (issue 14)
        from peftstudio.model.embedded_vision import ensure_embedded_vision_model

        return str(ensure_embedded_vision_model())
    local = Path(settings.name_or_path).expanduser()
    return str(local) if local.exists() else settings.name_or_path


def match_vocabulary(model, tokenizer) -> None:
    """Grow the embedding matrix when the tokenizer has more tokens than it has rows (control
    tokens added by data.add_special_tokens=true, or a pad token runs of earlier versions
    added). Rows beyond the tokenizer, common in hub models, stay."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def quantization_config(peft: PeftSettings, sharded: bool = False):
    """The bitsandbytes config for the frozen base weights, or None for a full-precision base.
    `sharded`: FSDP / ZeRO-3 split the weights across processes, which only works for floating
    tensors, so the packed 4-bit bytes are stored in compute-dtype containers (the same bytes;
    with uint8 storage accelerate leaves every 4-bit weight unsharded on every process)."""
    if peft.quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if peft.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=peft.quantization,
        bnb_4bit_use_double_quant=peft.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, DTYPES[peft.compute_dtype]),
        # Unsharded: keep the packed 4-bit storage in bytes, what bitsandbytes' kernels expect.
        bnb_4bit_quant_storage=getattr(torch, DTYPES[peft.compute_dtype]) if sharded else torch.uint8,
    )


def load_base_model(location: str, settings: ModelSettings, precision: str, attention: str,
                    quantization=None, device: str = "cpu", image_text: bool = False):
    """The base model in `precision`; quantized by bitsandbytes when `quantization` is given.
    `image_text`: the data has images, the model loads with its vision tower (AutoModelForImageTextToText)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    placement = {}
    if quantization is not None and device == "cuda":
        # bitsandbytes quantizes while the weights move to the GPU: place them on this process's
        # GPU at load time (its local rank under torchrun / accelerate launch).
        local_rank = process_place().local_rank
        gpu = local_rank if local_rank is not None else torch.cuda.current_device()
        placement = {"device_map": {"": gpu}}
    try:
        model = (AutoModelForImageTextToText if image_text else AutoModelForCausalLM).from_pretrained(
            location,
            revision=settings.revision,
            trust_remote_code=settings.trust_remote_code,
            dtype=getattr(torch, DTYPES[precision]),
            attn_implementation=attention,
            quantization_config=quantization,
            **placement,
        )
    except OSError as error:
        raise unreachable_model(settings, error) from None
    if quantization is not None and device == "cpu":
        keep_4bit_weights_dequantizable(model)
    return model


def keep_4bit_weights_dequantizable(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its AVX512-BF16 CPU kernel.

    bitsandbytes 0.50 repacks a Linear4bit's weight into another layout on its first forward
    in eval mode without gradients (an evaluation step, generation) on CPUs with AVX512-BF16,
    and `dequantize_4bit(weight, quant_state)` then returns wrong values (measured: 145%
    relative error). peft's DoRA dequantizes the base weight for its column norms on every
    forward, so a QDoRA run trained on wrong norms after its first evaluation; merge and
    generate read the weights the same way. Without the repack the regular 4-bit kernel runs.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def prepare_quantized_for_training(model, gradient_checkpointing: bool) -> None:
    """Freeze a quantized base for adapter training, leaving every unquantized weight at the
    precision it was loaded in.

    peft's `prepare_model_for_kbit_training` casts every non-4-bit parameter (embeddings, output
    head, norms) to fp32, so the residual stream, every norm input and the logits run in fp32 too.
    Measured (benchmarks/qlora_prep.py, see benchmarks/README.md) it costs memory and time for
    nothing the run needs: Llama-family RMSNorm already computes in fp32 internally, and the loss
    (TRL's chunked log-probabilities or transformers' cross-entropy) upcasts the logits itself.
    With gradient checkpointing through reentrant checkpoints, the embedding output must require
    grad so that the checkpointed blocks' adapters receive gradients."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    if gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def lora_config(peft: PeftSettings, embedding_modules: list[str] | None = None):
    """The one peft `LoraConfig` every supported method maps to. `embedding_modules`: the
    input embedding and output head, trained in full and saved with the adapter, when the
    vocabulary grew for a chat template's control tokens (data.add_special_tokens=true).
    (peft's trainable_token_indices would save only the new rows, but TRL's fused LM head
    reads `lm_head.weight` directly and would never see them.)"""
    from peft import LoraConfig, TaskType

    # LoftQ is applied after the adapter exists (see `apply_loftq`): peft's own LoftQ init
    # runs on CUDA only, so the adapter starts as plain LoRA here.
    init = True if peft.init in ("default", "loftq") else peft.init
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=peft.target_modules,
        bias=peft.bias,
        use_rslora=peft.use_rslora,
        use_dora=peft.use_dora,
        init_lora_weights=init,
        modules_to_save=embedding_modules or None,
        ensure_weight_tying=bool(embedding_modules),
    )


def attach_adapter(model, peft: PeftSettings, seed: int, gradient_checkpointing: bool = False,
                   location: str | None = None, train_embeddings: bool = False):
    """Wrap the frozen base model with a freshly initialised adapter (seeded)."""
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(seed)
    if peft.quantization != "none":
        prepare_quantized_for_training(model, gradient_checkpointing)
    wrapped = get_peft_model(model, lora_config(peft, embedding_module_names(model) if train_embeddings else None))
    if peft.init == "loftq":
        from peftstudio.model.loftq import apply_loftq

        apply_loftq(wrapped, location)
    return wrapped


def load_init_adapter(model, peft: PeftSettings, adapter: Path, seed: int, gradient_checkpointing: bool = False):
    """Wrap the frozen base model with the trainable adapter saved in the dir `adapter`
    (peft.init_adapter, checked by plan: of the run's shape), as the "default" adapter."""
    from peft import PeftModel
    from transformers import set_seed

    set_seed(seed)
    if peft.quantization != "none":
        prepare_quantized_for_training(model, gradient_checkpointing)
    return PeftModel.from_pretrained(model, str(adapter), adapter_name="default", is_trainable=True)


def embedding_module_names(model) -> list[str]:
    """The names of the model's input embedding and output head, whatever the family calls them."""
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return list(dict.fromkeys(name.rpartition(".")[2] for name, module in model.named_modules() if id(module) in wanted))


def needs_conversion(peft: PeftSettings) -> bool:
    """True when the saved adapter must be converted to apply to the original base weights."""
    return peft.init.startswith(CONVERTED_INITS)
