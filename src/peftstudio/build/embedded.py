"""The embedded tiny model: a small Llama that peftstudio builds itself, with no download.

`ensure_embedded_model()` returns a directory that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load like any hub checkout. The first call builds it into
the cache (about half a minute on a laptop CPU), later calls reuse it:

1. a byte-level BPE tokenizer is trained on the bundled sample rows and background text,
   with a ChatML-like chat template whose assistant turns are wrapped in
   `{% generation %}` so assistant-only loss masks work;
2. a `LlamaForCausalLM` with the `TINY_ARCHITECTURE` numbers is initialised from a fixed seed;
3. the whole model is briefly pretrained on plain background sentences (facts such as
   "Paris is the capital of France." and simple word games). It never sees the chat
   template or an instruction, so the base model cannot answer the sample prompts and a
   LoRA adapter trained on them visibly teaches it to.

The build is deterministic on one machine: the same recipe gives byte-identical
`model.safetensors` and `tokenizer.json`. The directory name carries a hash of the recipe,
so changing any number below builds a fresh model next to the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from peftstudio.build.sample_data import generate_background_text, generate_sample_rows

EMBEDDED_MODEL_ID = "embedded:tiny-llama"

# Bump when the build code changes in a way the dicts below do not capture (e.g. new
# background sentences): the recipe hash changes and a new model directory is built.
RECIPE_VERSION = 1

# Every Linear layer's in/out features and the vocabulary are multiples of 64, because the
# bitsandbytes 4-bit CPU kernels refuse other shapes. q: 128->128, k/v: 128->64 (2 KV heads x 32),
# o: 128->128, gate/up: 128->384, down: 384->128, lm_head: 128->1024.
TINY_ARCHITECTURE: dict[str, int | bool] = {
    "num_layers": 4,
    "hidden_size": 128,
    "num_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 32,
    "intermediate_size": 384,
    "vocab_size": 1024,
    "tie_embeddings": True,
    "attention_bias": False,
    "max_position_embeddings": 2048,
}

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_turn|>"
PAD_TOKEN = "<|pad|>"
TURN_START_TOKEN = "<|start_of_turn|>"
# Order fixes the ids: pad 0, bos 1, eos 2, turn start 3. No unknown token: byte-level BPE
# can spell any input from its 256 byte symbols.
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, TURN_START_TOKEN)

TOKENIZER_SETTINGS: dict[str, object] = {
    "kind": "byte-level-bpe",
    "vocab_size": TINY_ARCHITECTURE["vocab_size"],
    "min_frequency": 2,
    "special_tokens": list(SPECIAL_TOKENS),
}

PRETRAINING_SETTINGS: dict[str, int | float] = {
    "seed": 1234,
    "steps": 600,
    "batch_size": 16,
    "row_length": 64,
    "learning_rate": 3e-3,
    "warmup_steps": 30,
    "weight_decay": 0.01,
    "background_sentences": 20000,
    "threads": 2,
}

# ChatML-like. Content is trimmed and every header ends in a newline, so the prompt rendered
# with add_generation_prompt=True is always a token prefix of prompt + completion (TRL derives
# the completion-only loss mask from that). The end-of-turn token sits inside the generation
# block: it is the eos token, so the model is trained to emit it and generation stops there.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('roles must be system, user or assistant, got ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '" + TURN_START_TOKEN + "' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] | trim + eos_token -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] | trim + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + TURN_START_TOKEN + "assistant\\n' -}}{%- endif -%}"
)


def cache_root() -> Path:
    """Where peftstudio caches built artefacts: `$PEFTSTUDIO_CACHE`, else `~/.cache/peftstudio`."""
    configured = os.environ.get("PEFTSTUDIO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "peftstudio"


def recipe_hash() -> str:
    """Short hash of everything that decides the built bytes (numbers, template, version)."""
    recipe = {
        "version": RECIPE_VERSION,
        "architecture": TINY_ARCHITECTURE,
        "tokenizer": TOKENIZER_SETTINGS,
        "pretraining": PRETRAINING_SETTINGS,
        "chat_template": CHAT_TEMPLATE,
    }
    encoded = json.dumps(recipe, sort_keys=True).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:12]


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """The directory the current recipe builds into (it may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "models" / f"tiny-llama-{recipe_hash()}"


def ensure_embedded_model(cache_dir: Path | None = None) -> Path:
    """Return the embedded model directory, building it first if it is missing.

    The build goes to a temporary sibling directory that is renamed into place only when
    complete, so a killed build never leaves a directory that looks finished. A lock file
    serialises concurrent callers: the second one waits, then finds the model and reuses it.
    """
    target = embedded_model_dir(cache_dir)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / ".build.lock"):
        if target.is_dir():  # another process finished the build while we waited
            return target
        _remove_abandoned_builds(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            build_embedded_model(staging)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_abandoned_builds(target: Path) -> None:
    # Only called under the lock, so any staging directory left here belongs to a dead build.
    for leftover in target.parent.glob(f".{target.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def build_embedded_model(output_dir: Path) -> None:
    """Build tokenizer and pretrained model into `output_dir` (which must exist)."""
    background = generate_background_text(
        count=int(PRETRAINING_SETTINGS["background_sentences"]), seed=int(PRETRAINING_SETTINGS["seed"])
    )
    tokenizer = train_tokenizer(tokenizer_training_text(background))
    with _deterministic_torch(int(PRETRAINING_SETTINGS["seed"]), int(PRETRAINING_SETTINGS["threads"])):
        model = LlamaForCausalLM(llama_config(tokenizer))
        pretrain(model, tokenizer, background)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)


@contextlib.contextmanager
def _deterministic_torch(seed: int, threads: int) -> Iterator[None]:
    # A fixed thread count keeps the float reduction order, hence the bytes, the same run to
    # run; fork_rng leaves the caller's global random state as it was.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(previous_threads)


def tokenizer_training_text(background: list[str]) -> list[str]:
    """The text the BPE is trained on, in a fixed order: sample rows as chat text, then background."""
    lines = []
    for row in generate_sample_rows():
        prompt = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
        lines.append(f"user\n{prompt}\nassistant\n{row['output']}")
    return lines + background


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on `texts` and wrap it with special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    # Every whitespace character is its own token, so a word is the same token after a space,
    # a newline or a chat header ("Paris" in "is Paris." and in an answer). With GPT-2 style
    # "Ġword" tokens the pretrained facts would sit on different ids than the answers.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(TOKENIZER_SETTINGS["vocab_size"]),
        min_frequency=int(TOKENIZER_SETTINGS["min_frequency"]),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS_TOKEN)
    # Plain text gets a leading bos like Llama tokenizers; chat templates add their own and
    # are tokenized without special tokens, so a conversation never gets two.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[TURN_START_TOKEN],
        chat_template=CHAT_TEMPLATE,
        model_max_length=int(TINY_ARCHITECTURE["max_position_embeddings"]),
        padding_side="right",
    )


def llama_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The `LlamaConfig` for `TINY_ARCHITECTURE`, with the tokenizer's special token ids."""
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
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, sentences: list[str]) -> None:
    """Next-token training of the whole model on background sentences packed into rows."""
    settings = PRETRAINING_SETTINGS
    steps = int(settings["steps"])
    if steps == 0:
        return
    rows = _packed_rows(tokenizer, sentences, int(settings["row_length"]))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(settings["learning_rate"]), weight_decay=float(settings["weight_decay"])
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(int(settings["warmup_steps"]), steps))
    order = random.Random(int(settings["seed"]))
    model.train()
    for _ in range(steps):
        batch = rows[order.sample(range(len(rows)), int(settings["batch_size"]))]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        if _ % 50 == 0 or _ == steps - 1:
            print("pretrain", _, round(loss.item(), 3), round(__import__("time").time(), 1), flush=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def _packed_rows(tokenizer: PreTrainedTokenizerFast, sentences: list[str], row_length: int) -> torch.Tensor:
    # Sentences (bos ... eos) are concatenated and cut into equal rows: no padding, so every
    # token of the pretraining budget teaches something.
    documents = tokenizer(sentences)["input_ids"]
    stream = [token for document in documents for token in (*document, tokenizer.eos_token_id)]
    usable = len(stream) // row_length * row_length
    return torch.tensor(stream[:usable], dtype=torch.long).view(-1, row_length)


def _warmup_cosine(warmup_steps: int, total_steps: int):
    import math

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
