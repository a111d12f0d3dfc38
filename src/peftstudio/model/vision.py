"""Image-text models: loading through `AutoModelForImageTextToText`, and LoRA on the language
model only.

The vision tower and the projector stay frozen at the training precision (peft freezes every
base weight; the adapter's layers are chosen here): the default `peft.target_modules` would
otherwise also match the vision tower's Linear layers (`all-linear` matches every one).
Targets are given to peft as one regular expression over full module names, so a layer of
the same name in the vision tower (`q_proj` in SigLIP) is never touched.
"""

from __future__ import annotations

import re

from peftstudio.config.schema import PeftSettings

VISION_PARTS = ("vision_tower", "visual", "vision_model", "multi_modal_projector", "mm_projector")


def language_linear_names(model, wanted: list[str] | str) -> list[str]:
    """Full names of the language model's Linear layers that `wanted` (all-linear or short
    names) selects; the output head is never one."""
    import torch

    head = id(model.get_output_embeddings())
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) == head or "language_model" not in name:
            continue
        if any(part in name.split(".") for part in VISION_PARTS):
            continue
        if wanted == "all-linear" or name.rpartition(".")[2] in wanted:
            found.append(name)
    return found


def language_target_pattern(model, peft: PeftSettings) -> str:
    """One regex peft full-matches against module names: the language model's targets only."""
    suffixes = sorted({name.rpartition(".")[2] for name in language_linear_names(model, peft.target_modules)})
    return rf".*language_model.*\.({'|'.join(map(re.escape, suffixes))})"


def attach_image_text_adapter(model, peft: PeftSettings, seed: int, gradient_checkpointing: bool = False):
    """A fresh adapter (seeded) on the language model's layers; vision tower and projector frozen."""
    from peft import get_peft_model
    from transformers import set_seed

    from peftstudio.model.load import lora_config

    set_seed(seed)
    if peft.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = lora_config(peft)
    config.target_modules = language_target_pattern(model, peft)
    return get_peft_model(model, config)


# What bitsandbytes must leave at the compute precision in an image-text model: the vision
# tower and projector (QLoRA quantizes the language model only, as the tutorial does) and the
# output head (transformers' own default, replaced when a list is given).
UNQUANTIZED = [r".*vision_tower", r".*multi_modal_projector", r".*visual", "lm_head"]


def keep_vision_unquantized(quantization):
    """The quantization config with the vision tower and projector left unquantized (None stays None)."""
    if quantization is not None:
        quantization.llm_int8_skip_modules = list(UNQUANTIZED)
    return quantization
