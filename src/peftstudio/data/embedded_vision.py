"""The embedded tiny image-text model's recipe: a Gemma-3-style model peftstudio builds itself.

`model=tiny_vision` names `embedded:tiny-vision`. Like the embedded text model
(`data/embedded.py` + `model/embedded.py`), this half is what the data layer needs without
building weights: the architecture numbers, the tokenizer (the embedded text model's BPE plus
Gemma-3's three image tokens), the image processor and the processor that ties them together,
and the cache directory named by the recipe's hash. `model/embedded_vision.py` builds and
saves the weights beside them.

The architecture is Gemma-3's (`Gemma3ForConditionalGeneration`): a SigLIP vision tower reads
a 64x64 image as 8x8 patches of 8 pixels; the projector average-pools them 2x2 into 16 image
tokens, each projected to the text width. Every Linear layer's in/out width is a multiple of
64 (bitsandbytes' 4-bit CPU kernels refuse other shapes), the vocabulary 1088 = 17 x 64.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from peftstudio.data.embedded import TINY_ARCHITECTURE
from peftstudio.settings import cache_root

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EMBEDDED_VISION_ID = "embedded:tiny-vision"
RECIPE_VERSION = 3  # 2: random projector (transformers leaves it zero); 3: caption pretraining

BOI_TOKEN = "<start_of_image>"
EOI_TOKEN = "<end_of_image>"
IMAGE_TOKEN = "<image_soft_token>"

# The embedded text model's language model as a Gemma-3 block, its vocabulary grown by 64 for the
# image tokens (still a multiple of 64, for bitsandbytes' CPU kernels).
TINY_VISION_ARCHITECTURE: dict[str, int | bool | str] = {"model_type": "gemma3", **TINY_ARCHITECTURE, "vocab_size": 1088}

TINY_VISION_TOWER: dict[str, int] = {
    "image_size": 64,
    "patch_size": 8,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_layers": 2,
    "num_heads": 2,
    "tokens_per_image": 16,
}

BUILD_SETTINGS: dict[str, int | float] = {"seed": 4321, "init_std": 0.05, "projector_std": 0.0625, "threads": 2,
                                          "caption_steps": 100, "caption_batch": 16, "caption_lr": 3e-3}


@functools.cache
def recipe_hash() -> str:
    """Short hash of everything that decides the built bytes (plus the text model's recipe:
    the tokenizer is the text model's)."""
    from peftstudio.data.embedded import recipe_hash as text_recipe_hash

    recipe = {"version": RECIPE_VERSION, "architecture": TINY_VISION_ARCHITECTURE, "tower": TINY_VISION_TOWER,
              "build": BUILD_SETTINGS, "text": text_recipe_hash(), "tokens": [BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def embedded_vision_dir(cache_dir: Path | None = None) -> Path:
    """Where the current recipe builds into (it may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "models" / f"tiny-vision-{recipe_hash()}"


def vision_tokenizer() -> PreTrainedTokenizerFast:
    """The embedded text tokenizer with Gemma-3's image tokens added (ids 1024, 1025, 1026),
    named so Gemma-3's processor finds them (`tokenizer.boi_token` ...)."""
    from peftstudio.data.embedded import background_text, tokenizer_training_text, train_tokenizer

    tokenizer = train_tokenizer(tokenizer_training_text(background_text()))
    tokenizer.add_special_tokens({"extra_special_tokens": [BOI_TOKEN, EOI_TOKEN, IMAGE_TOKEN]},
                                 replace_extra_special_tokens=False)
    # transformers 5 names model-specific tokens only through this (what its own loader calls
    # for a tokenizer_config's named extra_special_tokens); the names are saved and reloaded.
    tokenizer._set_model_specific_special_tokens({"boi_token": BOI_TOKEN, "eoi_token": EOI_TOKEN,
                                                  "image_token": IMAGE_TOKEN})
    return tokenizer


def vision_processor(tokenizer=None):
    """A `Gemma3Processor` over the tokenizer and a 64x64 image processor (mean/std 0.5, as Gemma 3's)."""
    # The PIL image processor: the default one needs torchvision, which is not a dependency.
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    tower = TINY_VISION_TOWER
    image_processor = Gemma3ImageProcessorPil(size={"height": tower["image_size"], "width": tower["image_size"]},
                                           image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    tokenizer = tokenizer if tokenizer is not None else vision_tokenizer()
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template,
                           image_seq_length=tower["tokens_per_image"])
