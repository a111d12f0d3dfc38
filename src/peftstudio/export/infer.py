"""Load a finished run's base model with its adapter, and generate from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.data.templates import stop_token_ids
from peftstudio.errors import Problem, UserError
from peftstudio.plan.runs import read_run
from peftstudio.track.runs import RunDir


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy when temperature is 0, else seeded sampling."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


def finished_run(path: Path) -> tuple[RunDir, RunConfig]:
    """The run dir and its resolved config; a user error naming what is missing otherwise."""
    record = read_run(path, require_plan=True)
    run_dir = record.paths
    if not (run_dir.adapter / "adapter_config.json").is_file():
        raise UserError(Problem(str(path), "the run has no adapter/ yet (training did not finish)",
                                "finish it with `peftstudio train` and the same config (it resumes), "
                                "then pass this directory again"))
    return run_dir, record.plan.config


def load_run_model(path: Path):
    """(PeftModel in eval mode, tokenizer, the run's RunConfig) for a run directory; the base
    is loaded the way it was trained (quantized for QLoRA runs)."""
    import torch
    from peft import PeftModel

    from peftstudio.model.load import (load_base_model, load_tokenizer, match_vocabulary, model_location,
                                        quantization_config)

    run_dir, config = finished_run(path)
    location = model_location(config.model)
    tokenizer = load_tokenizer(str(run_dir.adapter), config.model)
    on_gpu = config.device == "cuda" and torch.cuda.is_available()
    precision = config.training.precision if on_gpu else "fp32"
    base = load_base_model(location, config.model, precision, "sdpa", quantization_config(config.peft),
                           "cuda" if on_gpu else "cpu")
    match_vocabulary(base, tokenizer)  # a pad token added at train time
    model = PeftModel.from_pretrained(base, str(run_dir.adapter))
    model.eval()
    return model, tokenizer, config


def run_prompts(model, tokenizer, prompts: list[str], sampling: Sampling) -> list[tuple[str, str]]:
    """(base model answer, adapter answer) per prompt, chat template applied."""
    answers = []
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    for prompt in prompts:
        ids = prompt_ids(tokenizer, prompt).to(model.device)
        with model.disable_adapter():
            base = _generate(model, tokenizer, ids, sampling, stops)
        answers.append((base, _generate(model, tokenizer, ids, sampling, stops)))
    return answers


def prompt_ids(tokenizer, prompt: str):
    """Token ids of `prompt` as one user turn in the chat template (plain text without one), as
    a batch of one."""
    import torch

    from peftstudio.train.generation import prompt_token_ids

    return torch.tensor([prompt_token_ids(tokenizer, [{"role": "user", "content": prompt}])])


def _generate(model, tokenizer, ids, sampling: Sampling, stops: list[int]) -> str:
    import torch

    sample = sampling.temperature > 0
    options = {"do_sample": sample}
    if sample:
        torch.manual_seed(sampling.seed)  # the same seed gives the same sample, base and adapter alike
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    with torch.no_grad():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                max_new_tokens=sampling.max_new_tokens, eos_token_id=stops,
                                pad_token_id=tokenizer.pad_token_id, **options)
    return tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
