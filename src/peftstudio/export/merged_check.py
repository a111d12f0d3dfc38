"""Check a merged model before `export --format merged` says it is done: reload it from disk as
a plain transformers model and compare its logits with the base model carrying the adapter
unmerged (float32), token by token over a few chat prompts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from peftstudio.export.failure import ExportCheckFailed

# Prompts the check runs: short, and through the chat template as `generate` sends them.
CHECK_PROMPTS = ("What is LoRA?", "Write one sentence about the sea.")
# Largest |merged - adapter| logit accepted, relative to the largest |logit|: float32 differs only
# by the order of additions; fp16 / bf16 weights round at 2^-11 / 2^-8 per weight, and that
# compounds over the layers.
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 8e-2}


@dataclass(frozen=True)
class LogitsCheck:
    prompts: int
    positions: int
    max_difference: float
    largest_logit: float
    tolerance: float
    argmax_agreement: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"reloaded and compared with base + adapter on {self.prompts} prompts ({self.positions} positions): "
                f"largest logit difference {self.max_difference:.2g} (limit {self.tolerance:.2g}), "
                f"same top token at {self.argmax_agreement:.0%} of positions")


def reference_logits(run_path: Path, prompts=CHECK_PROMPTS, image_text: bool = False):
    """(token ids per prompt, float32 logits per prompt) of the base with the adapter unmerged."""
    import torch

    from peftstudio.export.infer import finished_run, prompt_ids
    from peftstudio.export.merge import load_unmerged

    run_dir, config = finished_run(run_path)
    model, tokenizer = load_unmerged(run_dir, config, "fp32", image_text=image_text)
    model.eval()
    ids = [prompt_ids(tokenizer, prompt) for prompt in prompts]
    with torch.no_grad():
        logits = [model(input_ids=one).logits[0].float() for one in ids]
    return ids, logits


def compare_merged(model_dir: Path, dtype: str, ids, expected, image_text: bool = False) -> LogitsCheck:
    """Load `model_dir` fresh and compare its logits with `expected`; ExportCheckFailed past the limit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from peftstudio.model.load import DTYPES

    loader = AutoModelForImageTextToText if image_text else AutoModelForCausalLM
    model = loader.from_pretrained(model_dir, dtype=DTYPES[dtype])
    model.eval()
    worst, largest, same, positions = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for one, reference in zip(ids, expected):
            logits = model(input_ids=one).logits[0].float()
            worst = max(worst, float((logits - reference).abs().max()))
            largest = max(largest, float(reference.abs().max()))
            same += int((logits.argmax(-1) == reference.argmax(-1)).sum())
            positions += reference.shape[0]
    check = LogitsCheck(len(ids), positions, worst, largest, RELATIVE_TOLERANCE[dtype] * largest, same / positions)
    if check.max_difference > check.tolerance:
        raise ExportCheckFailed(f"the merged model's logits differ from base + adapter by {worst:.3g} "
                                f"(limit {check.tolerance:.3g} for {dtype}); nothing was written")
    return check
