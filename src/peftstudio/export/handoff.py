"""`peftstudio export RUN_DIR --format merged|gguf|vllm`: hand a trained run to another runtime,
each checked before it is called done.

Every format is written into a hidden staging directory next to `--out` and renamed to `--out`
only after its check passed, so a failed check leaves no half-made hand-off; `export.json` in it
records what was checked and the figures.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.errors import Problem, UserError
from peftstudio.export.infer import finished_run
from peftstudio.export.merge import check_destination, merge_run
from peftstudio.files import replace_dir, write_text
from peftstudio.plan.runs import read_run

FORMATS = ("merged", "gguf", "vllm")
QUANTIZATIONS = ("f16", "q8_0", "q4_k_m")


@dataclass
class ExportResult:
    format: str
    out: Path
    files: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    command: str | None = None

    def to_dict(self) -> dict:
        return {"format": self.format, "out": str(self.out), "files": self.files, "checks": self.checks,
                "details": self.details, "command": self.command}


def check_options(fmt: str, quantize: str | None) -> str | None:
    """The GGUF weight type, after refusing options that do not fit the format (before any load)."""
    if fmt not in FORMATS:
        raise UserError(Problem("--format", f"{fmt!r} is not one of {', '.join(FORMATS)}", "use --format merged"))
    if quantize is not None and fmt != "gguf":
        raise UserError(Problem("--quantize", f"{quantize} applies to --format gguf only",
                                "drop --quantize (a merged model's dtype is `peftstudio merge --dtype`)"))
    if fmt == "gguf" and (quantize or "f16") not in QUANTIZATIONS:
        raise UserError(Problem("--quantize", f"{quantize!r} is not one of {', '.join(QUANTIZATIONS)}",
                                "use --quantize f16 (exact) or q8_0 / q4_k_m (smaller)"))
    return (quantize or "f16") if fmt == "gguf" else None


def export_run(run_path: Path, fmt: str, out: Path, quantize: str | None = None,
               overwrite: bool = False) -> ExportResult:
    """Write and check one hand-off of a finished run."""
    file_type = check_options(fmt, quantize)
    run_dir, config = finished_run(run_path)
    out = out.expanduser()
    check_destination(out, overwrite)
    image_text = read_run(run_path, require_plan=True).plan.data.modality == "image-text"
    if image_text and fmt != "merged":
        raise UserError(Problem("--format", f"{fmt} export of an image-text run is not supported: its vision tower "
                                            "and projector need a separate projector file (GGUF mmproj) or a "
                                            "multimodal serving check that peftstudio does not make",
                                "use --format merged (a full image-text model that transformers loads)"))
    if fmt == "merged":
        result = _export_merged(run_path, out, overwrite, image_text)
    elif fmt == "gguf":
        result = _export_gguf(run_path, out, file_type)
    else:
        result = _export_vllm(run_dir, config, out)
    result.files = sorted({p.name for p in result.out.iterdir()} | {"export.json"})
    write_text(result.out / "export.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _export_merged(run_path: Path, out: Path, overwrite: bool, image_text: bool) -> ExportResult:
    from peftstudio.export.merged_check import compare_merged, reference_logits

    ids, expected = reference_logits(run_path, image_text=image_text)
    result = ExportResult("merged", out)

    def verify(staged: Path) -> None:
        check = compare_merged(staged, "fp32", ids, expected, image_text=image_text)
        result.checks.append(check.summary())
        result.details["logits"] = check.to_dict()

    merge_run(run_path, out, "fp32", overwrite, verify=verify)
    loader = "AutoModelForImageTextToText" if image_text else "AutoModelForCausalLM"
    result.command = f"{loader}.from_pretrained({str(out)!r})"
    return result


def _export_gguf(run_path: Path, out: Path, file_type: str) -> ExportResult:
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = _fresh(out.with_name(f".{out.name}.tmp"))
    try:
        result, gguf_name = _write_checked_gguf(run_path, staged, file_type)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    replace_dir(staged, out)
    result.out = out
    result.command = f"llama-cli -m {out / gguf_name}   |   cd {out} && ollama create NAME -f Modelfile"
    return result


def _write_checked_gguf(run_path: Path, staged: Path, file_type: str) -> tuple[ExportResult, str]:
    """Merge (in a scratch dir), convert, check and add the Modelfile, all inside `staged`."""
    from transformers import AutoTokenizer

    from peftstudio.export.gguf_check import check_gguf, quantize_q4_k_m
    from peftstudio.export.gguf_file import write_gguf
    from peftstudio.export.infer import prompt_ids
    from peftstudio.export.merged_check import CHECK_PROMPTS

    with tempfile.TemporaryDirectory(dir=staged.parent, prefix=f"{staged.name}.merged-") as scratch:
        merged = Path(scratch) / "merged"
        merge_run(run_path, merged, "fp32")
        gguf_name = f"model-{file_type}.gguf"
        if file_type == "q4_k_m":
            write_gguf(merged, Path(scratch) / "model-f16.gguf", "f16")
            quantize_q4_k_m(Path(scratch) / "model-f16.gguf", staged / gguf_name)
        else:
            write_gguf(merged, staged / gguf_name, file_type)
        tokenizer = AutoTokenizer.from_pretrained(merged)
        prompt = CHECK_PROMPTS[0]
        ids = prompt_ids(tokenizer, prompt)[0].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        check = check_gguf(staged / gguf_name, merged, file_type, text, ids)
        result = ExportResult("gguf", staged, details={"gguf": check.to_dict()})
        result.checks.append(f"gguf reader: {check.read_back}")
        result.checks.append(_runner_line(check))
        result.checks.append(_write_modelfile(tokenizer, staged, gguf_name))
    return result, gguf_name


def _runner_line(check) -> str:
    if check.runner is None:
        return "llama-cpp-python is not installed: the file was read back, not run"
    tokenizer = "same" if check.tokenizer_agrees else "differs (the check feeds transformers' token ids)"
    return (f"{check.runner}: greedy tokens agree {check.agreement} of {len(check.transformers_tokens)} with "
            f"transformers ({check.file_type}); largest logit difference {check.max_logit_difference:.3g}; "
            f"llama.cpp's tokenization of the prompt {tokenizer}")


def _write_modelfile(tokenizer, staged: Path, gguf_name: str) -> str:
    from peftstudio.export.ollama import TemplateNotDerivable, modelfile

    import gguf

    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    field = gguf.GGUFReader(str(staged / gguf_name)).get_field("tokenizer.ggml.add_bos_token")
    runtime_bos = tokenizer.bos_token if field is not None and bool(field.contents()) else None
    try:
        text, checked = modelfile(tokenizer, gguf_name, stops, runtime_bos)
    except TemplateNotDerivable as reason:
        text = f"FROM ./{gguf_name}\n" + "".join(f'PARAMETER stop "{stop}"\n' for stop in stops)
        checked = f"Modelfile without TEMPLATE: {reason}; Ollama then uses the GGUF's own chat template metadata"
    write_text(staged / "Modelfile", text)
    return f"Modelfile: {checked}"


def _export_vllm(run_dir, config, out: Path) -> ExportResult:
    from peftstudio.export.vllm_layout import write_vllm_layout
    from peftstudio.model.load import model_location

    base = str(model_location(config.model))
    architecture = _architecture(Path(base))
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staged, ignore_errors=True)
    layout = write_vllm_layout(run_dir.adapter, staged, out, base, out.name, config.peft.quantization != "none",
                               architecture)
    replace_dir(staged, out)
    result = ExportResult("vllm", out, command=layout.command)
    result.checks.append(f"adapter_config.json as vLLM's PEFTHelper reads it: rank {layout.rank} "
                         f"(--max-lora-rank {layout.max_lora_rank}), targets {', '.join(layout.target_modules)}, "
                         "no DoRA, no modules_to_save")
    result.checks.append(f"{layout.tensors} tensors named as vLLM's parse_fine_tuned_lora_name expects")
    result.checks.append("against vLLM's documented loader (vLLM itself does not install on a CPU-only machine)")
    return result


def _architecture(base: Path) -> str | None:
    config = base / "config.json"
    if not config.is_file():
        return None
    return (json.loads(config.read_text(encoding="utf-8")).get("architectures") or [None])[0]


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
