"""Load the tokenizer and base model, and attach the adapter the plan asks for.

LoRA, DoRA, rsLoRA and PiSSA are one peft `LoraConfig` with different flags (and later a
quantization config), not a family of classes.
"""

from __future__ import annotations

from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelSettings, PeftSettings
from peftstudio.errors import EnvironmentProblem, Problem

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def model_location(settings: ModelSettings) -> str:
    """A path or hub id `from_pretrained` can load; builds the embedded model on first use."""
    if settings.name_or_path == EMBEDDED_MODEL_ID:
        from peftstudio.build.embedded import ensure_embedded_model

        return str(ensure_embedded_model())
    local = Path(settings.name_or_path).expanduser()
    return str(local) if local.exists() else settings.name_or_path


def load_tokenizer(location: str, settings: ModelSettings):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=settings.revision,
                                                  trust_remote_code=settings.trust_remote_code)
    except OSError as error:
        raise _unreachable(settings, error) from None
    return tokenizer  # its pad token is made safe by build.tokenizer.fix_pad_token


def match_vocabulary(model, tokenizer) -> None:
    """Grow the embedding matrix when the tokenizer has more tokens than it has rows (a pad
    token added by fix_pad_token). Rows beyond the tokenizer, common in hub models, stay."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def load_base_model(location: str, settings: ModelSettings, precision: str, attention: str):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            location,
            revision=settings.revision,
            trust_remote_code=settings.trust_remote_code,
            dtype=getattr(torch, DTYPES[precision]),
            attn_implementation=attention,
        )
    except OSError as error:
        raise _unreachable(settings, error) from None


def _unreachable(settings: ModelSettings, error: OSError) -> EnvironmentProblem:
    return EnvironmentProblem(Problem(
        "model.name_or_path",
        f"cannot load {settings.name_or_path!r}: {str(error).splitlines()[0]}",
        "check the hub id and your network/HF_TOKEN, or point model.name_or_path at a local model directory",
    ))


def lora_config(peft: PeftSettings):
    """The one peft `LoraConfig` every supported method maps to."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=peft.target_modules,
        bias=peft.bias,
        use_rslora=peft.use_rslora,
        use_dora=peft.use_dora,
        init_lora_weights=True if peft.init == "default" else peft.init,
    )


def attach_adapter(model, peft: PeftSettings, seed: int):
    """Wrap the frozen base model with a freshly initialised adapter (seeded)."""
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(seed)
    return get_peft_model(model, lora_config(peft))
