"""Tokenize image-text rows: the text with the labels text rows get, each image expanded into
the image tokens the model's processor writes for it.

A prepared row's text holds `<image>` where each image stands (data/images.py). Each one is
replaced by the processor's placeholder (Gemma 3: `<start_of_image>`; Qwen2.5-VL:
`<|vision_start|><|image_pad|><|vision_end|>`), the conversation is tokenized with the same
assistant-span masking as text (data/tokenization.py -> data/turns.py), and every placeholder
token is then replaced by the token sequence the processor itself produces for that image
(Gemma 3: two newlines, begin-of-image, 256 image tokens, end-of-image, two newlines; Qwen2.5-VL:
one token per 28x28 pixels, between its min and max pixels). Those tokens are never labels.
So the lengths `plan` reports and `training.max_seq_length` checks include the image tokens,
and the collator (train/vision_collator.py) only has to add the pixel tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from peftstudio.data.images import IMAGE_PLACEHOLDER, parse_grid, refs_from_json, row_images
from peftstudio.data.turns import IGNORE, TurnProblem
from peftstudio.errors import Problem, UserError

MAX_LISTED = 10


@dataclass(frozen=True)
class ImageRow:
    """A tokenized image-text row (the fields of data.tokenization.TokenizedRow, plus its images)."""

    input_ids: list[int]
    labels: list[int]
    images: str = "[]"  # JSON list of image refs (data/images.py), as the dataset column carries it
    image_tokens: int = 0
    image_spans: list[tuple[int, int]] = field(default_factory=list)


def placeholder_text(processor) -> str:
    """What stands for one image in the text the chat template renders."""
    vocabulary = processor.tokenizer.get_vocab()
    if "<|vision_start|>" in vocabulary and processor.image_token == "<|image_pad|>":
        return "<|vision_start|><|image_pad|><|vision_end|>"
    return processor.image_token


def image_expansion(processor, image) -> list[int]:
    """The token ids the processor writes for one image in place of its placeholder."""
    encoded = processor(text=[processor.image_token], images=[[image]], add_special_tokens=False)
    return list(encoded["input_ids"][0])


def _with_placeholders(row: dict[str, Any], text: str) -> dict[str, Any]:
    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(IMAGE_PLACEHOLDER, text)
        if isinstance(value, list):
            return [swap(item) for item in value]
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        return value

    return {key: swap(value) for key, value in row.items() if key != "images"}


def tokenize_image_row(setup, row: dict[str, Any], masking, grid_spec: str | None) -> ImageRow:
    """One prepared image-text row -> ids with the image tokens in place, labels, image refs."""
    from peftstudio.data.tokenization import tokenize_row

    processor = setup.image_processor()
    text_row = tokenize_row(setup, _with_placeholders(row, placeholder_text(processor)), masking)
    images = row_images(refs_from_json(row["images"]), parse_grid(grid_spec))
    marker = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    positions = [i for i, token in enumerate(text_row.input_ids) if token == marker]
    if len(positions) != len(images):
        raise TurnProblem(f"the rendered text holds {len(positions)} image placeholder(s) for {len(images)} image(s)",
                          f"write one {IMAGE_PLACEHOLDER} per image; the chat template must keep message text as is")
    ids, labels, spans, start = [], [], [], 0
    for position, image in zip(positions, images):
        ids += text_row.input_ids[start:position]
        labels += text_row.labels[start:position]
        expansion = image_expansion(processor, image)
        spans.append((len(ids), len(ids) + len(expansion)))
        ids += expansion
        labels += [IGNORE] * len(expansion)
        start = position + 1
    ids += text_row.input_ids[start:]
    labels += text_row.labels[start:]
    image_tokens = sum(end - begin for begin, end in spans)
    return ImageRow(ids, labels, json.dumps(row["images"]), image_tokens, spans)


def refuse_cut_images(rows: list, where: list[str], max_length: int, action: str) -> None:
    """Truncation must never cut into an image's tokens: the model needs all of them (the
    processor's pixel tensors would no longer match). Such rows are refused with file:line."""
    if action != "truncate":
        return
    cut = [i for i, row in enumerate(rows) if isinstance(row, ImageRow) and row.image_spans
           and len(row.input_ids) > max_length and row.image_spans[-1][1] > max_length]
    if not cut:
        return
    problems = [Problem(where[i], f"{len(rows[i].input_ids)} tokens ({rows[i].image_tokens} of them image tokens), "
                        f"over training.max_seq_length={max_length}, and truncation would cut into an image")
                for i in cut[:MAX_LISTED]]
    longest = max(len(rows[i].input_ids) for i in cut)
    problems.append(Problem("fix", f"raise training.max_seq_length to at least {longest} (the longest sample), use "
                            "fewer or smaller images (data.image_grid), or set data.overlong=drop"))
    raise UserError(problems, headline=f"{len(cut)} image-text sample(s) would lose image tokens to truncation")


def image_token_stats(rows: list) -> dict[str, Any] | None:
    """Text and image tokens counted apart, for `plan`; None for text-only rows."""
    image_rows = [row for row in rows if isinstance(row, ImageRow)]
    if not image_rows:
        return None
    image_tokens = sum(row.image_tokens for row in image_rows)
    total = sum(len(row.input_ids) for row in rows)
    images = sum(len(row.image_spans) for row in image_rows)  # as the model sees them: a grid is one
    longest = max(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    return {"rows_with_images": len(image_rows), "images": images, "image_tokens": image_tokens,
            "text_tokens": total - image_tokens,
            "image_tokens_per_image": round(image_tokens / images, 1) if images else 0,
            "max_images_per_row": max(len(row.image_spans) for row in image_rows),
            "files": sum(len(json.loads(row.images)) for row in image_rows),
            "longest_row_index": longest}
