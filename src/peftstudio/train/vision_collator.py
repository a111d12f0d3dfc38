"""Batches of image-text rows: the tokenized rows padded as for text, plus the pixel tensors
the model's processor makes from each row's images, loaded when the batch is built (decoded
pixels of a whole dataset would not fit in memory; the files were checked at plan time).

The rows already hold the image tokens (data/vision_tokens.py) with labels masked, so the
image tokens and the padding are never in the loss. Gemma 3 also gets `token_type_ids` (1 on
image tokens): its attention lets the tokens of one image see each other, as in pretraining.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from peftstudio.data.images import parse_grid, refs_from_json, row_images
from peftstudio.data.turns import IGNORE


@dataclass
class ImageTextCollator:
    processor: object
    pad_token_id: int
    image_grid: str | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            ids[row, :length] = torch.tensor(feature["input_ids"])
            labels[row, :length] = torch.tensor(feature["labels"])
            mask[row, :length] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        grid = parse_grid(self.image_grid)
        images = [image for f in features for image in row_images(refs_from_json(json.loads(f["image_refs"])), grid)]
        if images:
            pixels = self.processor.image_processor(images=images, return_tensors="pt")
            batch.update({key: value for key, value in pixels.items() if key != "num_crops"})
        if "token_type_ids" in getattr(self.processor, "model_input_names", []):
            image_ids = torch.tensor(image_token_ids(self.processor))
            batch["token_type_ids"] = torch.isin(ids, image_ids).long()
        return batch


def image_token_ids(processor) -> list[int]:
    """The ids the model replaces by image features (Gemma 3: the soft image token, not begin-of-image)."""
    tokenizer = processor.tokenizer
    if getattr(tokenizer, "image_token_id", None) is not None:
        return [tokenizer.image_token_id]
    return [processor.image_token_id]
