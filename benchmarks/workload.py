"""The benchmark workload: a ~22M-parameter Llama and a variable-length instruction set,
both built deterministically, offline, from peftstudio's embedded tokenizer and text.

Not a test and not part of the package: `throughput.py` and `mfu.py` import it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

# A Llama about the size the benchmarks are specified for (20-40M parameters): 8 blocks of
# width 512 with grouped-query attention and a SwiGLU MLP, the embedded model's vocabulary.
ARCHITECTURE = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                    num_key_value_heads=4, head_dim=64, max_position_embeddings=2048)
SEED = 1234


def build_model(directory: Path) -> Path:
    """A randomly initialised Llama (fixed seed) and the embedded tokenizer, saved to `directory`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from peftstudio.model.embedded import ensure_embedded_model

    if (directory / "config.json").is_file():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, dtype="float32", **ARCHITECTURE)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def parameter_count(directory: Path) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    import torch

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    return sum(p.numel() for p in model.parameters())


def build_dataset(path: Path, rows: int = 192) -> Path:
    """Alpaca-shaped rows whose lengths vary widely (a few words to a few hundred): short
    questions next to long notes to summarise, the mix that makes padding expensive."""
    from peftstudio.data.sample import generate_background_text

    sentences = generate_background_text(count=2000, seed=SEED)
    rng = random.Random(SEED)
    records = []
    for _ in range(rows):
        prompt_sentences = min(int(rng.paretovariate(1.1)), 40)
        answer_sentences = min(int(rng.paretovariate(1.3)), 25)
        notes = " ".join(rng.choice(sentences) for _ in range(prompt_sentences))
        answer = " ".join(rng.choice(sentences) for _ in range(answer_sentences))
        records.append({"instruction": rng.choice(("Rewrite these notes.", "Continue the notes.", "Answer briefly.")),
                        "input": notes if prompt_sentences > 1 else "", "output": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prepare(description: str, name: str) -> tuple[argparse.Namespace, Path, Path, Path]:
    """The benchmarks' shared command line, then the workload: (arguments, workdir, model dir,
    data file). The model and data are reused when --workdir already holds them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--log-interval", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model, data and runs here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"peftstudio-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return args, workdir, build_model(workdir / "model"), build_dataset(workdir / "data.jsonl", args.rows)
