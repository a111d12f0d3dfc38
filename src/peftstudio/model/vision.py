"""Image-text models: LoRA on the part `peft.target_scope` names (the language model by
default), and QLoRA that leaves the vision tower unquantized.

The base stays frozen at the training precision (peft freezes every base weight; the adapter's
layers are chosen here): `all-linear` would otherwise match the vision tower's Linear layers
too. Targets are given to peft as one regular expression of full module names, so a layer of
the same name in the other part (`q_proj` in SigLIP and in Gemma) is never touched by mistake.
The projector is never a target.
"""

from __future__ import annotations

import re

from peftstudio.config.schema import PeftSettings

TOWERS = ("vision_tower", "visual", "vision_model")
PROJECTORS = ("multi_modal_projector", "mm_projector", "merger")


def scoped_linear_names(model, wanted: list[str] | str, scope: str = "language") -> list[str]:
    """Full names of the Linear layers that `wanted` (all-linear or short names) selects in the
    part `scope` names (language, vision or all); the output head and the projector never."""
    import torch

    head = id(model.get_output_embeddings())
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or id(module) == head:
            continue
        parts = name.split(".")
        if any(p in parts for p in PROJECTORS):
            continue
        part = "vision" if any(p in parts for p in TOWERS) else "language" if "language_model" in parts else None
        if part is None or scope not in (part, "all"):
            continue
        if wanted == "all-linear" or parts[-1] in wanted:
            found.append(name)
    return found


def target_pattern(model, peft: PeftSettings) -> str:
    """One regex peft full-matches against module names: the scope's targets only."""
    names = scoped_linear_names(model, peft.target_modules, peft.target_scope)
    if not names:
        raise ValueError(f"peft.target_modules={peft.target_modules} matches no Linear layer in the "
                         f"{peft.target_scope} part of this model")
    return "|".join(re.escape(name) for name in names)


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
    config.target_modules = target_pattern(model, peft)
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
