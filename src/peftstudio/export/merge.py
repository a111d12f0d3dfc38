"""Merge a run's adapter into its full-precision base model and save it as a plain
transformers model (safetensors + tokenizer).

QLoRA / QDoRA adapters are merged onto the base loaded unquantized: merging into 4-bit
weights would round the adapter's update away. PiSSA / OLoRA adapters were converted on save,
so they too apply to the original base.

An image-text run (plan.json's data.modality) merges into the whole model, loaded with
AutoModelForImageTextToText (vision tower and projector unchanged: the adapter is on the
language model unless peft.target_scope said otherwise), and saves the processor beside it,
so the merged directory loads with AutoModelForImageTextToText + AutoProcessor.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftstudio.model.load import DTYPES
from peftstudio.errors import Problem, UserError
from peftstudio.export.infer import finished_run
from peftstudio.files import replace_dir
from peftstudio.plan.runs import read_run


@dataclass(frozen=True)
class MergeResult:
    out: Path
    dtype: str
    base: str
    method: str
    files: list[str]


def check_destination(out: Path, overwrite: bool) -> None:
    """A user error before any weight is loaded when `out` would clobber something."""
    if out.exists() and not out.is_dir():
        raise UserError(Problem(str(out), "exists and is a file", "pass --out a directory path"))
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(Problem(str(out), "exists and is not empty", "choose another --out, or pass --overwrite"))


def load_unmerged(run_dir, config, dtype: str, image_text: bool = False):
    """(PeftModel with the adapter unmerged on the full-precision base, tokenizer): what a merge
    merges, and what its result is compared with."""
    from peft import PeftModel

    from peftstudio.model.load import load_base_model, load_tokenizer, match_vocabulary, model_location

    # no quantization config: full precision
    base = load_base_model(model_location(config.model), config.model, dtype, "sdpa", image_text=image_text)
    tokenizer = load_tokenizer(str(run_dir.adapter), config.model)
    match_vocabulary(base, tokenizer)  # a pad token added at train time
    return PeftModel.from_pretrained(base, str(run_dir.adapter)), tokenizer


def merge_run(run_path: Path, out: Path, dtype: str = "fp32", overwrite: bool = False,
              verify: Callable[[Path], None] | None = None) -> MergeResult:
    """Load base (unquantized, `dtype`) + adapter, merge, and write `out` atomically; `verify`
    (given the staged directory) runs before `out` appears, so a failed check leaves nothing."""
    if dtype not in DTYPES:
        raise UserError(Problem("--dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}", "use --dtype fp32"))
    run_dir, config = finished_run(run_path)
    out = out.expanduser()
    check_destination(out, overwrite)
    import torch

    image_text = read_run(run_path, require_plan=True).plan.data.modality == "image-text"
    model, tokenizer = load_unmerged(run_dir, config, dtype, image_text=image_text)
    merged = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    with torch.no_grad():
        merged.save_pretrained(staged, safe_serialization=True)
    if image_text:  # the processor carries the tokenizer, image processor and chat template
        from peftstudio.data.vision_processor import load_processor

        load_processor(config, tokenizer).save_pretrained(staged)
    else:
        tokenizer.save_pretrained(staged)
    if verify is not None:
        try:
            verify(staged)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    replace_dir(staged, out)
    return MergeResult(out, dtype, config.model.name_or_path, config.peft.method,
                       sorted(p.name for p in out.iterdir()))
