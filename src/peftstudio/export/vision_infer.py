"""Generate from an image-text run: a prompt with its images, or the run's held-out samples.

The prompt is built exactly as training built its rows (data/vision_tokens.py): the images'
`<image>` placeholders in one user turn, the chat template with the generation prompt, each
placeholder replaced by the processor's token sequence for that image; the pixel tensors come
from the same collator. With `data.image_grid` the images given are composed into the grid,
as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftstudio.data.images import IMAGE_PLACEHOLDER, ImageProblem, ImageRef, load_image, refs_to_json
from peftstudio.data.templates import stop_token_ids
from peftstudio.errors import Problem, UserError
from peftstudio.export.infer import Sampling, finished_run


def load_image_text_run(path: Path):
    """(PeftModel in eval mode, processor, the run's RunConfig), the base with its vision tower."""
    import torch
    from peft import PeftModel

    from peftstudio.data.vision_processor import load_processor
    from peftstudio.model.load import load_base_model, load_tokenizer, model_location, quantization_config
    from peftstudio.model.vision import keep_vision_unquantized

    run_dir, config = finished_run(path)
    tokenizer = load_tokenizer(str(run_dir.adapter), config.model)
    on_gpu = config.device == "cuda" and torch.cuda.is_available()
    precision = config.training.precision if on_gpu else "fp32"
    base = load_base_model(model_location(config.model), config.model, precision, "sdpa",
                           keep_vision_unquantized(quantization_config(config.peft)), "cuda" if on_gpu else "cpu",
                           image_text=True)
    model = PeftModel.from_pretrained(base, str(run_dir.adapter))
    model.eval()
    return model, load_processor(config, tokenizer), config


def checked_images(paths: list[Path]) -> list[ImageRef]:
    refs, problems = [], []
    for path in paths:
        ref = ImageRef("path", str(Path(path).expanduser().resolve()))
        try:
            load_image(ref)
        except ImageProblem as problem:
            problems.append(Problem(f"--image {path}", problem.message, problem.fix))
        refs.append(ref)
    if problems:
        raise UserError(problems)
    return refs


def validation_samples(config, count: int) -> list[tuple[str, list[ImageRef], str]]:
    """(prompt with placeholders, images, expected answer) of the run's first held-out image rows."""
    from peftstudio.data.images import refs_from_json
    from peftstudio.data.prepare import prepare_data

    data = prepare_data(config.data)
    samples = []
    for row in data.validation_rows or data.train_rows:
        if "images" not in row:
            continue
        messages = row["messages"] if "messages" in row else row["prompt"] + row["completion"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        answer = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
        samples.append((user, refs_from_json(row["images"]), answer))
    return samples[:count]


def run_image_prompts(model, processor, config, samples: list[tuple[str, list[ImageRef]]],
                      sampling: Sampling) -> list[tuple[str, str]]:
    """(base answer, adapter answer) for each (prompt, images)."""
    answers = []
    stops = stop_token_ids(processor.tokenizer, model.generation_config.eos_token_id)
    for prompt, refs in samples:
        inputs = prompt_inputs(processor, config, prompt, refs)
        with model.disable_adapter():
            base = _generate(model, processor.tokenizer, inputs, sampling, stops)
        answers.append((base, _generate(model, processor.tokenizer, inputs, sampling, stops)))
    return answers


def with_placeholders(prompt: str, count: int) -> str:
    """The prompt as training saw it: placeholders the prompt lacks go first, one per line ending."""
    missing = count - prompt.count(IMAGE_PLACEHOLDER)
    return IMAGE_PLACEHOLDER * missing + "\n" + prompt if missing > 0 else prompt


def prompt_inputs(processor, config, prompt: str, refs: list[ImageRef]) -> dict:
    from peftstudio.data.vision_tokens import image_expansion, placeholder_text
    from peftstudio.data.images import parse_grid, row_images
    from peftstudio.train.vision_collator import ImageTextCollator

    tokenizer = processor.tokenizer
    grid = parse_grid(config.data.image_grid)
    text = with_placeholders(prompt, 1 if grid else len(refs))
    if grid:  # several placeholders collapse into the grid's one, as in training
        first = text.find(IMAGE_PLACEHOLDER)
        text = text[:first + len(IMAGE_PLACEHOLDER)] + text[first + len(IMAGE_PLACEHOLDER):].replace(IMAGE_PLACEHOLDER, "")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text.replace(IMAGE_PLACEHOLDER,
                                                                                      placeholder_text(processor))}],
                                             add_generation_prompt=True, tokenize=False)
    ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    marker = tokenizer.convert_tokens_to_ids(processor.image_token)
    expanded = []
    images = iter(row_images(refs, grid))
    for token in ids:
        expanded += image_expansion(processor, next(images)) if token == marker else [token]
    collator = ImageTextCollator(processor, tokenizer.pad_token_id, config.data.image_grid)
    batch = collator([{"input_ids": expanded, "labels": expanded, "image_refs": json.dumps(refs_to_json(refs))}])
    batch.pop("labels")
    return batch


def _generate(model, tokenizer, inputs: dict, sampling: Sampling, stops: list[int]) -> str:
    import torch

    options = {"do_sample": sampling.temperature > 0}
    if sampling.temperature > 0:
        torch.manual_seed(sampling.seed)
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=sampling.max_new_tokens, eos_token_id=stops,
                                pad_token_id=tokenizer.pad_token_id, **options)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
