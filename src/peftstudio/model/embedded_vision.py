"""Build the embedded tiny image-text model (`model=tiny_vision`) from its recipe.

`ensure_embedded_vision_model()` returns a directory that `AutoModelForImageTextToText`,
`AutoProcessor` and `AutoTokenizer` load like a hub checkout of a Gemma-3 model: a
`Gemma3ForConditionalGeneration` (SigLIP tower, average-pooling projector, Gemma-3 text
model) initialised from a fixed seed, and the processor of `data/embedded_vision.py`. The
whole model is then pretrained briefly on captions of generated shape images ("two blue
squares.", "one red circle on the left."), never a question or a chat turn: the base sees but
does not answer the bundled sample's questions, and a LoRA adapter trained on them has to
connect the two (as the embedded text model is pretrained on facts, not on instructions). Built
once into the cache (1-3 minutes on a 2-core CPU), with the same staging, lock and rename as the
text model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from peftstudio.data.embedded_vision import (BUILD_SETTINGS, EMBEDDED_VISION_ID, TINY_VISION_ARCHITECTURE,
                                             TINY_VISION_TOWER, embedded_vision_dir, recipe_hash, vision_processor)
from peftstudio.files import replace_dir
from peftstudio.model.embedded import _deterministic_torch, _exclusive_lock

logger = logging.getLogger(__name__)


def ensure_embedded_vision_model(cache_dir: Path | None = None) -> Path:
    """The tiny image-text model's directory, built first if missing (atomically, under a lock)."""
    target = embedded_vision_dir(cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".build.lock"):
        if target.is_dir():
            return target
        for leftover in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            logger.info("building the embedded tiny image-text model in %s (once)", target)
            build_embedded_vision_model(staging)
            staging.chmod(0o755)
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def gemma3_config(tokenizer):
    """The `Gemma3Config` of the recipe, carrying the tokenizer's special and image token ids."""
    from transformers import Gemma3Config

    arch, tower = TINY_VISION_ARCHITECTURE, TINY_VISION_TOWER
    text = dict(vocab_size=arch["vocab_size"], hidden_size=arch["hidden_size"],
                intermediate_size=arch["intermediate_size"], num_hidden_layers=arch["num_layers"],
                num_attention_heads=arch["num_heads"], num_key_value_heads=arch["num_kv_heads"],
                head_dim=arch["head_dim"], max_position_embeddings=arch["max_position_embeddings"],
                sliding_window=512, initializer_range=float(BUILD_SETTINGS["init_std"]),
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    vision = dict(hidden_size=tower["hidden_size"], intermediate_size=tower["intermediate_size"],
                  num_hidden_layers=tower["num_layers"], num_attention_heads=tower["num_heads"],
                  image_size=tower["image_size"], patch_size=tower["patch_size"], vision_use_head=False)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=tower["tokens_per_image"],
                        boi_token_index=tokenizer.boi_token_id, eoi_token_index=tokenizer.eoi_token_id,
                        image_token_index=tokenizer.image_token_id, initializer_range=float(BUILD_SETTINGS["init_std"]),
                        tie_word_embeddings=True, dtype="float32")


def build_embedded_vision_model(output_dir: Path) -> None:
    """Initialise the model from the recipe's seed and save it with its processor."""
    import torch
    from transformers import Gemma3ForConditionalGeneration, GenerationConfig

    processor = vision_processor()
    tokenizer = processor.tokenizer
    with _deterministic_torch(int(BUILD_SETTINGS["seed"]), int(BUILD_SETTINGS["threads"])):
        model = Gemma3ForConditionalGeneration(gemma3_config(tokenizer))
        # transformers initialises Gemma 3's projector to zeros (a pretrained checkpoint always
        # overwrites it): every image would reach the language model as the same zero vector,
        # a blind model. Random, scaled so image embeddings have the text embeddings' size.
        projection = model.model.multi_modal_projector.mm_input_projection_weight
        torch.nn.init.normal_(projection, std=float(BUILD_SETTINGS["projector_std"]))
        pretrain_on_captions(model, processor)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    recipe = {"model_id": EMBEDDED_VISION_ID, "recipe_hash": recipe_hash(), "architecture": TINY_VISION_ARCHITECTURE,
              "vision": TINY_VISION_TOWER}
    (Path(output_dir) / "peftstudio_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")


def pretrain_on_captions(model, processor) -> None:
    """Whole-model next-token training on `bos, image, caption, eos` (data/vision_sample.py's
    caption_images): the model learns to see colours, shapes, counts and sides, but never sees a
    question or the chat template, so the base does not answer the sample's questions; a LoRA
    adapter trained on them has to connect the two."""
    import torch

    from peftstudio.data.vision_sample import caption_images

    steps, batch = int(BUILD_SETTINGS["caption_steps"]), int(BUILD_SETTINGS["caption_batch"])
    pairs = caption_images(steps * batch, int(BUILD_SETTINGS["seed"]))
    tokenizer = processor.tokenizer
    image_ids = {tokenizer.image_token_id, tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.pad_token_id}
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(BUILD_SETTINGS["caption_lr"]), weight_decay=0.0)
    model.train()
    for step in range(steps):
        chunk = pairs[step * batch:(step + 1) * batch]
        texts = [f"{tokenizer.bos_token}{processor.image_token}{caption}{tokenizer.eos_token}" for _, caption in chunk]
        inputs = processor(text=texts, images=[[image] for image, _ in chunk], return_tensors="pt", padding=True,
                           add_special_tokens=False)
        labels = inputs["input_ids"].clone()
        labels[torch.isin(labels, torch.tensor(sorted(image_ids)))] = -100
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            logger.info("tiny image-text pretraining step %d/%d loss %.3f", step + 1, steps, loss.item())
    model.eval()
