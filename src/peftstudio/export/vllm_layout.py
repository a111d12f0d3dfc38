"""The adapter in the layout vLLM's LoRA loader reads, plus the `vllm serve` command.

vLLM does not install on a CPU-only machine, so the layout is checked against what its loader
does (vllm/lora/peft_helper.py, vllm/lora/utils.py, vllm/config/lora.py): `adapter_config.json`
with `r`, `lora_alpha` and `target_modules`; no DoRA and no `modules_to_save` (refused by
PEFTHelper); bias `none` unless the server enables LoRA bias; the rank no larger than
`--max-lora-rank`, which takes only the values in MAX_LORA_RANKS; `adapter_model.safetensors`
whose every tensor name starts with `base_model.model.` and ends in `lora_A.weight` /
`lora_B.weight` (or `lora_embedding_A` / `_B`), as parse_fine_tuned_lora_name requires.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from peftstudio.errors import Problem, UserError
from peftstudio.export.failure import ExportCheckFailed

# vllm/config/lora.py: MaxLoRARanks.
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The projections vLLM's Llama-family models accept LoRA on (packed as qkv_proj and gate_up_proj there).
LLAMA_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class VllmLayout:
    rank: int
    max_lora_rank: int
    target_modules: list[str]
    tensors: int
    command: str


def refusals(adapter_config: dict) -> list[str]:
    """What vLLM's PEFTHelper would refuse in this adapter_config.json."""
    found = []
    if adapter_config.get("use_dora"):
        found.append("DoRA adapters (use_dora) are not supported by vLLM")
    if adapter_config.get("modules_to_save"):
        found.append(f"modules_to_save {adapter_config['modules_to_save']} is not supported by vLLM")
    if int(adapter_config.get("r", 0)) > MAX_LORA_RANKS[-1]:
        found.append(f"rank {adapter_config['r']} is above vLLM's largest --max-lora-rank {MAX_LORA_RANKS[-1]}")
    missing = [key for key in ("r", "lora_alpha", "target_modules") if key not in adapter_config]
    if missing:
        found.append(f"adapter_config.json lacks {', '.join(missing)}")
    return found


def check_tensor_names(names: list[str]) -> None:
    """Every tensor must parse in vLLM's parse_fine_tuned_lora_name."""
    for name in names:
        parts = name.split(".")
        lora_weight = parts[-1] == "weight" and parts[-2] in ("lora_A", "lora_B")
        embedding = parts[-1] in ("lora_embedding_A", "lora_embedding_B")
        if parts[:2] != ["base_model", "model"] or not (lora_weight or embedding):
            raise ExportCheckFailed(f"tensor {name} is not a name vLLM's LoRA loader parses")


def serve_command(base: str, adapter_dir: Path, name: str, max_rank: int, quantized: bool) -> str:
    """`vllm serve` with this adapter enabled under `name`."""
    parts = ["vllm", "serve", base, "--enable-lora", "--lora-modules", f"{name}={adapter_dir.resolve()}",
             "--max-lora-rank", str(max_rank)]
    if quantized:
        parts += ["--quantization", "bitsandbytes"]  # the adapter was trained on the 4-bit base
    return " ".join(shlex.quote(part) for part in parts)


def write_vllm_layout(adapter: Path, staged: Path, out: Path, base: str, name: str, quantized: bool,
                      architecture: str | None) -> VllmLayout:
    """Copy the adapter's two files into `staged` (renamed `out` when done), read them back as vLLM would, and write
    `serve.sh`. UserError for an adapter vLLM refuses (nothing is written then)."""
    from safetensors import safe_open

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    problems = refusals(config)
    if problems:
        raise UserError([Problem("--format vllm", problem, "serve a merged model instead: "
                                 "export --format merged") for problem in problems])
    staged.mkdir(parents=True)
    for file in ADAPTER_FILES:
        (staged / file).write_bytes((adapter / file).read_bytes())
    with safe_open(str(staged / "adapter_model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    check_tensor_names(names)
    targets = config["target_modules"]
    targets = sorted(targets) if isinstance(targets, list) else [targets]
    if architecture == "LlamaForCausalLM" and not set(targets) <= LLAMA_LORA_MODULES:
        raise UserError(Problem("--format vllm", f"target modules {sorted(set(targets) - LLAMA_LORA_MODULES)} "
                                                 "take no LoRA in vLLM's Llama", "export --format merged instead"))
    rank = int(config["r"])
    max_rank = next(allowed for allowed in MAX_LORA_RANKS if allowed >= rank)
    command = serve_command(base, out, name, max_rank, quantized)
    (staged / "serve.sh").write_text(f"#!/bin/sh\n# Serve the base model with this adapter (vLLM on a GPU).\n"
                                     f"exec {command}\n", encoding="utf-8")
    return VllmLayout(rank, max_rank, targets, len(names), command)
