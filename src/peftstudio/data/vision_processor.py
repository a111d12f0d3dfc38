"""Which models read images, and their processor (image -> pixel tensors and image tokens).

A model is image-text when its architecture numbers carry a vision tower (the presets
`tiny_vision`, `gemma3_4b`, `qwen2_5_vl_3b`, `qwen2_5_vl_7b`, or `model.architecture.vision`),
or its config.json (a local directory) has a `vision_config`. The processor is loaded only
when the data has images, and always over the run's prepared tokenizer (chat template and
pad token as `plan` chose them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.data.embedded_vision import EMBEDDED_VISION_ID
from peftstudio.errors import EnvironmentProblem, Problem


def image_text_reason(config: RunConfig) -> str | None:
    """Why the configured model reads images, or None for a text-only model."""
    model = config.model
    if model.name_or_path == EMBEDDED_VISION_ID:
        return "the embedded tiny image-text model (Gemma-3 architecture)"
    if model.architecture is not None and model.architecture.vision is not None:
        return f"model.architecture.vision: a {model.architecture.vision.num_layers}-block vision tower"
    local = Path(model.name_or_path).expanduser() / "config.json"
    if local.is_file() and "vision_config" in json.loads(local.read_text(encoding="utf-8")):
        return f"{local} has a vision_config"
    return None


def processor_loader(config: RunConfig, tokenizer) -> Callable[[], object] | None:
    """A loader of the model's processor over `tokenizer`, or None for a text-only model."""
    if image_text_reason(config) is None:
        return None
    return lambda: load_processor(config, tokenizer)


def load_processor(config: RunConfig, tokenizer):
    if config.model.name_or_path == EMBEDDED_VISION_ID:
        from peftstudio.data.embedded_vision import vision_processor

        return vision_processor(tokenizer)
    from transformers import AutoProcessor

    local = Path(config.model.name_or_path).expanduser()
    location = str(local) if local.is_dir() else config.model.name_or_path
    try:
        processor = AutoProcessor.from_pretrained(location, revision=config.model.revision,
                                                  trust_remote_code=config.model.trust_remote_code)
    except OSError as error:
        raise EnvironmentProblem(Problem("model.name_or_path", f"cannot load the processor of {location!r}: "
                                         f"{str(error).splitlines()[0]}",
                                         "check the hub id and your network/HF_TOKEN, or use a local model directory "
                                         "with its preprocessor_config.json")) from None
    processor.tokenizer = tokenizer
    return processor
