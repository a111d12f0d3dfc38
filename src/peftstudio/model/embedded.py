"""The embedded tiny model: a small Llama that peftstudio builds itself, with no download.

`ensure_embedded_model()` returns a directory that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load like any hub checkout. The first call builds it into
the cache (about half a minute on a 2-core CPU); later calls reuse it. The recipe (numbers,
tokenizer, chat template, training text) is `peftstudio.data.embedded`. The build:

1. trains the recipe's byte-level BPE tokenizer on the bundled sample rows and the
   background text; its ChatML-like template has the assistant turns in `{% generation %}`;
2. initialises a `LlamaForCausalLM` with the `TINY_ARCHITECTURE` numbers from a fixed seed;
3. pretrains the whole model briefly on plain background sentences that state the facts
   behind the sample tasks ("Paris is the capital of France.", "dog in capitals is DOG.").
   It never sees the chat template, a question or an instruction, so the base model does
   not answer the sample prompts; a LoRA adapter trained on them visibly teaches it to.

The build is deterministic on one machine: the same recipe gives byte-identical
`model.safetensors` and `tokenizer.json`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from peftstudio.data.embedded import (EMBEDDED_MODEL_ID, PRETRAINING_SETTINGS, TINY_ARCHITECTURE, background_text,
                                      embedded_model_dir, recipe_hash, tokenizer_training_text, train_tokenizer)
from peftstudio.files import replace_dir

if TYPE_CHECKING:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)


def ensure_embedded_model(cache_dir: Path | None = None) -> Path:
    """Return the embedded model directory, building it first if it is missing.

    `cache_dir` is the cache root (default `cache_root()`); the model lands in
    `CACHE/models/tiny-llama-HASH`. The build goes to a temporary sibling directory that is
    renamed into place only when complete, so a killed build never leaves a directory that
    looks finished. A lock file serialises concurrent callers: the second one waits, then
    finds the finished model and reuses it.
    """
    target = embedded_model_dir(cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".build.lock"):
        if target.is_dir():  # another process finished the build while this one waited
            return target
        _remove_abandoned_builds(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            started = time.monotonic()
            logger.info("building the embedded tiny model in %s (once, about half a minute)", target)
            build_embedded_model(staging)
            staging.chmod(0o755)  # mkdtemp creates it owner-only; the finished model is not secret
            replace_dir(staging, target)
            logger.info("embedded tiny model built in %.1f s", time.monotonic() - started)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target



@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # flock is released by the kernel when the process dies, so a killed build never
    # leaves the cache locked.
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)



def _remove_abandoned_builds(target: Path) -> None:
    # Only called under the lock: a staging directory found here belongs to a dead build.
    for leftover in target.parent.glob(f".{target.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)



def build_embedded_model(output_dir: Path) -> None:
    """Build the tokenizer and the pretrained model and save both into existing `output_dir`."""
    from transformers import GenerationConfig, LlamaForCausalLM

    background = background_text()
    tokenizer = train_tokenizer(tokenizer_training_text(background))
    seed, threads = int(PRETRAINING_SETTINGS["seed"]), int(PRETRAINING_SETTINGS["threads"])
    with _deterministic_torch(seed, threads):
        model = LlamaForCausalLM(llama_config(tokenizer))
        pretrain(model, tokenizer, background)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    recipe = {"model_id": EMBEDDED_MODEL_ID, "recipe_hash": recipe_hash(), "architecture": TINY_ARCHITECTURE}
    (Path(output_dir) / "peftstudio_recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")



@contextlib.contextmanager
def _deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    # fork_rng leaves the caller's global random state exactly as it was.
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(previous_threads)



def llama_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The `LlamaConfig` for `TINY_ARCHITECTURE`, carrying the tokenizer's special token ids."""
    from transformers import LlamaConfig

    arch = TINY_ARCHITECTURE
    return LlamaConfig(
        vocab_size=arch["vocab_size"],
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_kv_heads"],
        head_dim=arch["head_dim"],
        max_position_embeddings=arch["max_position_embeddings"],
        tie_word_embeddings=arch["tie_embeddings"],
        attention_bias=arch["attention_bias"],
        initializer_range=float(PRETRAINING_SETTINGS["init_std"]),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )



def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, sentences: list[str]) -> None:
    """Next-token training of the whole model on `sentences` (each one bos ... eos)."""
    import torch

    settings = PRETRAINING_SETTINGS
    steps = int(settings["steps"])
    documents = [ids + [tokenizer.eos_token_id] for ids in tokenizer(sentences)["input_ids"]]
    batches = _packed_batches(documents, random.Random(int(settings["seed"])), tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(settings["learning_rate"]),
        betas=(0.9, float(settings["adam_beta2"])),
        weight_decay=float(settings["weight_decay"]),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(int(settings["warmup_steps"]), steps))
    model.train()
    for step in range(steps):
        input_ids, position_ids, labels = next(batches)
        # No attention mask and no cache: transformers then reads the restarting position
        # ids as packed sequences and builds a block-diagonal causal mask, so no sentence
        # attends to another. (With a cache, it silently falls back to one causal mask.)
        loss = model(input_ids=input_ids, position_ids=position_ids, labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == steps - 1:
            logger.debug("embedded pretraining step %d/%d loss %.3f", step + 1, steps, loss.item())
    model.eval()



def _warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor



def _packed_batches(
    documents: list[list[int]], rng: random.Random, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    # Whole sentences packed into fixed-length rows (about 95% real tokens against about 70%
    # with per-sentence padding), reshuffled every epoch so each batch mixes all the kinds:
    # batches of one kind of sentence (e.g. from sorting by length) learn far worse.
    import torch

    row_length = int(PRETRAINING_SETTINGS["row_length"])
    rows_per_batch = int(PRETRAINING_SETTINGS["rows_per_batch"])
    while True:
        shuffled = [document[:row_length] for document in documents]
        rng.shuffle(shuffled)
        rows = _pack_rows(shuffled, row_length, pad_id)
        for start in range(0, len(rows) - rows_per_batch + 1, rows_per_batch):
            chunk = rows[start : start + rows_per_batch]
            yield tuple(torch.tensor([row[field] for row in chunk], dtype=torch.long) for field in range(3))



def _pack_rows(documents: list[list[int]], row_length: int, pad_id: int) -> list[tuple[list[int], ...]]:
    """Greedily pack documents into rows of (input_ids, position_ids, labels)."""
    rows: list[tuple[list[int], ...]] = []
    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for document in documents:
        if ids and len(ids) + len(document) > row_length:
            rows.append(_padded_row(ids, positions, labels, row_length, pad_id))
            ids, positions, labels = [], [], []
        ids += document
        positions += range(len(document))
        # A sentence's first token is not a prediction from the end of the previous sentence.
        labels += [-100, *document[1:]]
    if ids:
        rows.append(_padded_row(ids, positions, labels, row_length, pad_id))
    return rows



def _padded_row(
    ids: list[int], positions: list[int], labels: list[int], row_length: int, pad_id: int
) -> tuple[list[int], list[int], list[int]]:
    # The padding forms its own pseudo-sequence (positions restart at 0) that nothing else
    # attends to, and it is never a label.
    missing = row_length - len(ids)
    return ids + [pad_id] * missing, positions + list(range(missing)), labels + [-100] * missing
