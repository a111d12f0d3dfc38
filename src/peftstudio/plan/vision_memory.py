"""Image-text runs in the plan: which modality the run is and why, the image and text tokens
apart, and the memory the vision side adds (pure arithmetic, like plan/memory.py).

Memory of an image-text model beyond its language model (`vision_components`, added to the
estimate by plan/memory.py):
- vision tower weights: frozen, at the training precision. QLoRA keeps them unquantized (the
  loader skips the tower and projector when it quantizes: bitsandbytes would otherwise pack
  their Linear layers too), so they count at the compute precision;
- projector weights: the same;
- pixel tensors: 3 x side x side fp32 values per image, as the processor makes them;
- vision forward: the tower is frozen and nothing before it needs a gradient, so autograd
  keeps none of its activations; what it needs is transient, one block's working set for all
  the batch's images (hidden, attention scores, MLP), counted as if it met the peak (an upper
  bound). The image tokens themselves are text-sequence positions: training.max_seq_length
  and the token statistics already include them, so the language model's activations count them.
The estimate assumes one image per sample (exact with data.image_grid); `plan` names the
most images any sample has.

Time (`vision_flops_per_image`, added per token by plan/throughput.py): the tower's forward per
image, P = (image_size / patch_size)^2 patches, each through the patch embedding and every
block's Linear layers (2 FLOPs per weight) and full bidirectional attention (4 x P x width per
block: scores and values), then the projector on the image tokens. With LoRA on the language
model only the tower and projector are frozen and nothing before them needs a gradient, so
autograd never enters them: forward only. With adapters in the tower
(peft.target_scope=vision|all) the backward reaches its inputs: twice the forward (the
adapters' own few FLOPs left out). Qwen2.5-VL's windowed attention in most blocks makes the
attention term an upper bound there.
"""

from __future__ import annotations

import json
from typing import Any

from peftstudio.config.schema import RunConfig, VisionTower
from peftstudio.errors import Problem, UserError

PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
SCOPES = {"language": "LoRA on the language model only (peft.target_scope=language), vision tower and projector frozen",
          "vision": "LoRA on the vision tower only (peft.target_scope=vision), language model and projector frozen; "
                    "the estimate counts language-model adapters only",
          "all": "LoRA on the language model and the vision tower (peft.target_scope=all), projector frozen; "
                 "the estimate counts language-model adapters only"}


def vision_parameters(vision: VisionTower) -> int:
    """The tower's parameters: the preset's count, else a SigLIP-style count from its numbers
    (patch embedding, position embedding, blocks of attention + MLP + two layer norms, final norm)."""
    if vision.parameters:
        return vision.parameters
    h, i = vision.hidden_size, vision.intermediate_size
    patches = (vision.image_size // vision.patch_size) ** 2
    block = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    return 3 * vision.patch_size ** 2 * h + h + patches * h + vision.num_layers * block + 2 * h


def vision_flops_per_image(config: RunConfig) -> float:
    """Training FLOPs the vision side spends per image (see the module doc); 0 for a text-only model."""
    arch = config.model.architecture
    if arch is None or arch.vision is None:
        return 0.0
    v = arch.vision
    patches = (v.image_size // v.patch_size) ** 2
    linear = v.num_layers * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size) \
        + 3 * v.patch_size ** 2 * v.hidden_size
    attention = v.num_layers * 4 * patches * v.hidden_size
    forward = patches * (2 * linear + attention) + 2 * v.projector_parameters * v.tokens_per_image
    return float(forward * (1 if config.peft.target_scope == "language" else 2))


def vision_components(config: RunConfig, micro_batch: int, images_per_sample: int = 1) -> dict[str, int]:
    """Bytes the vision side adds to the peak (see the module doc); {} for a text-only model."""
    arch = config.model.architecture
    if arch is None or arch.vision is None:
        return {}
    vision = arch.vision
    width = PRECISION_BYTES.get(config.training.precision, 4)
    if config.peft.quantization != "none":
        width = PRECISION_BYTES.get(config.peft.compute_dtype, 2)
    if config.data.modality == "text":  # the tower is loaded and never run: its weights, nothing else
        return {"vision tower weights": vision_parameters(vision) * width,
                "projector weights": vision.projector_parameters * width}
    images = micro_batch * images_per_sample
    patches = (vision.image_size // vision.patch_size) ** 2
    working = patches * (4 * vision.hidden_size + vision.intermediate_size + vision.num_heads * patches)
    return {
        "vision tower weights": vision_parameters(vision) * width,
        "projector weights": vision.projector_parameters * width,
        "pixel tensors": images * 3 * vision.image_size ** 2 * 4,
        "vision forward (transient)": images * working * width,
    }


def modality_of(config: RunConfig, data, image_stats: dict | None) -> dict[str, Any]:
    """DataSummary fields: modality, its reason, the image token counts. An image dataset on a
    text-only model, or packing of image rows, is refused here (before any model loads)."""
    from peftstudio.data.vision_processor import image_text_reason

    reads_images = image_text_reason(config)
    if data.modality != "image-text":
        reason = "no record has images" + (f"; the model reads images ({reads_images}) but is trained on text only "
                                           "(its vision tower unused)" if reads_images else "")
        return {"modality": "text", "modality_reason": reason}
    with_images = sum("images" in row for row in data.train_rows + data.validation_rows)
    refuse_unreadable_images(config, data)
    grid = f"; data.image_grid={config.data.image_grid}: each record's images composed into one grid image " \
           "(row-major, tiles the size of the first image)" if config.data.image_grid else ""
    reason = (f"{with_images} of {len(data.train_rows) + len(data.validation_rows)} records have images and the model "
              f"reads them ({reads_images}); loaded with AutoModelForImageTextToText, {SCOPES[config.peft.target_scope]}{grid}")
    return {"modality": "image-text", "modality_reason": reason,
            "images": image_stats or estimated_image_stats(config, data)}


def estimated_image_stats(config: RunConfig, data) -> dict[str, Any]:
    """Image and text tokens from the architecture numbers when the tokenizer is not at hand
    (a hub model not downloaded): each image (a grid counts once) is the preset's tokens per
    image plus the text wrapped around it; text is 4 characters per token."""
    arch = config.model.architecture
    if arch is None or arch.vision is None:
        return {}
    per_image = arch.vision.tokens_per_image + arch.vision.extra_tokens_per_image
    counts = [min(len(row.get("images", [])), 1 if config.data.image_grid else 10**6) for row in data.train_rows]
    text = sum(len(json.dumps({k: v for k, v in row.items() if k != "images"})) // 4 for row in data.train_rows)
    images = sum(counts)
    return {"rows_with_images": sum(1 for n in counts if n), "images": images, "image_tokens": images * per_image,
            "text_tokens": text, "image_tokens_per_image": per_image, "max_images_per_row": max(counts, default=0),
            "files": sum(len(row.get("images", [])) for row in data.train_rows), "estimated": True,
            "longest_row": None}


def refuse_unreadable_images(config: RunConfig, data) -> None:
    """Image data on a text-only model, or packed image rows: refused before any tokenizer or
    model loads."""
    from peftstudio.data.vision_processor import image_text_reason

    if data.modality != "image-text":
        return
    if image_text_reason(config) is None:
        with_images = sum("images" in row for row in data.train_rows + data.validation_rows)
        raise UserError(Problem("model.name_or_path", f"{with_images} record(s) of {data.source} have images, but "
                                f"{config.model.name_or_path!r} is a text-only model",
                                "use an image-text model (model=tiny_vision, gemma3_4b, qwen2_5_vl_3b, qwen2_5_vl_7b, or "
                                "model.architecture.vision), or remove the images"))
    if config.training.packing == "on":
        raise UserError(Problem("training.packing", "packing is not supported for image-text data: packed rows would "
                                "share one attention span across images and the pixel tensors would no longer line up "
                                "with their image tokens", "set training.packing=off (or auto)"))


def describe_images(plan) -> str:
    """The image line of `plan`: images, image and text tokens apart, the longest sample."""
    stats = plan.data.images
    if not stats:
        return "token figures not measured (no tokenizer)"
    longest = plan.data.token_lengths.get("max")
    if stats.get("estimated"):
        return (f"{stats['images']} image(s) from {stats['files']} files in {stats['rows_with_images']} training rows; "
                f"~{stats['image_tokens']:,} image tokens ({stats['image_tokens_per_image']} per image, from "
                f"model.architecture.vision) + ~{stats['text_tokens']:,} text tokens (estimated: no tokenizer here)")
    files = f" from {stats['files']} files" if stats.get("files", stats["images"]) != stats["images"] else ""
    return (f"{stats['images']} image(s){files} in {stats['rows_with_images']} training rows (at most "
            f"{stats['max_images_per_row']} per row); {stats['image_tokens']:,} image tokens "
            f"(~{stats['image_tokens_per_image']:g} per image) + {stats['text_tokens']:,} text tokens; "
            f"longest sample {longest} tokens at {stats.get('longest_row')}")


def with_data_modality(config: RunConfig, summary) -> tuple[RunConfig, str | None]:
    """`config` with data.modality=auto resolved to what the data holds (the reason to print), or
    unchanged when set; a set value the data contradicts is a user error naming both."""
    modality = config.data.modality
    if modality == "auto":
        data = config.data.model_copy(update={"modality": summary.modality})
        return config.model_copy(update={"data": data}), summary.modality_reason
    if modality != summary.modality:
        raise UserError(Problem("data.modality", f"{modality}, but the data is {summary.modality}: {summary.modality_reason}",
                                "set data.modality=auto, or train on data of that kind"))
    return config, None


def without_image_packing(resolution, summary):
    """`training.packing=auto` never packs image-text rows (see `modality_of`): off, with the reason."""
    from dataclasses import replace

    training = resolution.config.training
    if summary.modality != "image-text" or training.packing != "on":
        return resolution
    config = resolution.config.model_copy(update={"training": training.model_copy(update={"packing": "off"})})
    reason = "image-text data is never packed (the pixel tensors must line up with each row's image tokens)"
    return replace(resolution, config=config, reasons={**resolution.reasons, "training.packing": reason})


def estimated_lengths(config: RunConfig, data) -> list[int]:
    """Tokens per training row without a tokenizer: 4 characters per text token, plus each
    image's tokens from model.architecture.vision (a grid counts once)."""
    arch = config.model.architecture
    per_image = arch.vision.tokens_per_image + arch.vision.extra_tokens_per_image if arch and arch.vision else 0
    lengths = []
    for row in data.train_rows:
        images = len(row.get("images", []))
        images = min(images, 1) if config.data.image_grid else images
        text = sum(len(str(value)) for key, value in row.items() if key != "images")
        lengths.append(text // 4 + 1 + images * per_image)
    return lengths
