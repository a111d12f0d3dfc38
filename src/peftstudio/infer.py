"""Load a finished run's base model with its adapter, and generate from it."""

from __future__ import annotations

from pathlib import Path

import yaml

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.track.runs import RunDir


def load_run_model(path: Path):
    """(PeftModel in eval mode, tokenizer, the run's RunConfig) for a run directory."""
    import torch
    from peft import PeftModel

    from peftstudio.build.model import load_base_model, load_tokenizer, match_vocabulary, model_location

    run_dir = RunDir.at(path)
    if not (run_dir.adapter / "adapter_config.json").is_file() or not run_dir.config.is_file():
        raise UserError(Problem(str(path), "not a finished peftstudio run (no adapter/ or config.resolved.yaml)",
                                "pass the training.output_dir of a run that completed, e.g. ./outputs"))
    config = RunConfig.model_validate(yaml.safe_load(run_dir.config.read_text(encoding="utf-8")))
    location = model_location(config.model)
    tokenizer = load_tokenizer(str(run_dir.adapter), config.model)
    precision = "fp32" if config.device == "cpu" or not torch.cuda.is_available() else config.training.precision
    base = load_base_model(location, config.model, precision, "sdpa")
    match_vocabulary(base, tokenizer)  # a pad token added at train time
    model = PeftModel.from_pretrained(base, str(run_dir.adapter))
    model.eval()
    return model, tokenizer, config


def run_prompts(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[tuple[str, str]]:
    """(base model answer, adapter answer) per prompt, greedy, chat template applied."""
    answers = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt).to(model.device)
        with model.disable_adapter():
            base = _greedy(model, tokenizer, ids, max_new_tokens)
        answers.append((base, _greedy(model, tokenizer, ids, max_new_tokens)))
    return answers


def _prompt_ids(tokenizer, prompt: str):
    import torch

    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
    else:
        ids = tokenizer(prompt)["input_ids"]
    return torch.tensor([ids])


def _greedy(model, tokenizer, ids, max_new_tokens: int) -> str:
    import torch

    with torch.no_grad():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
