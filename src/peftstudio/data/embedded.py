"""The embedded tiny model's recipe and tokenizer: what the build is made of and where it lands.

`peftstudio.model.embedded` builds the model from this recipe. This half is what the data
layer needs without building anything: the tokenizer (trained in memory in under a second,
the same bytes the build writes), the architecture numbers, and the recipe's hash, which
names the cache directory, so any change builds a fresh model next to the old one.

tokenizers and transformers are imported inside the functions: reading `TINY_ARCHITECTURE`
or `EMBEDDED_MODEL_ID` (config checks, `plan`) stays instant.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from peftstudio.config.schema import EMBEDDED_MODEL_ID  # noqa: F401  (re-exported: what configs name)
from peftstudio.data.sample import generate_background_text, generate_sample_rows
from peftstudio.settings import cache_root

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# Bump when the build code changes in a way the settings and the training text below do
# not capture (e.g. a new pretraining loop): the directory hash changes with it.
RECIPE_VERSION = 1

# Every Linear layer's in/out features and the vocabulary are multiples of 64, because the
# bitsandbytes 4-bit CPU kernels refuse other shapes. q: 128->128, k/v: 128->64 (2 KV heads
# x 32, grouped-query attention), o: 128->128, gate/up: 128->384, down: 384->128,
# lm_head: 128->1024 (tied to the input embedding).
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

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_turn|>"
TURN_START_TOKEN = "<|start_of_turn|>"
# The order fixes the ids: pad 0, bos 1, eos 2, turn start 3. No unknown token: byte-level
# BPE spells any input from its 256 byte symbols, so nothing is ever unknown.
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, TURN_START_TOKEN)

TOKENIZER_SETTINGS: dict[str, object] = {
    "kind": "byte-level-bpe, every whitespace character its own token",
    "vocab_size": TINY_ARCHITECTURE["vocab_size"],
    "min_frequency": 2,
    "special_tokens": list(SPECIAL_TOKENS),
}

PRETRAINING_SETTINGS: dict[str, int | float] = {
    "seed": 1234,
    # Llama's default 0.02 is far too small for a 128-wide model: attention starts uniform
    # and the model spends the whole budget learning templates before it learns any fact.
    "init_std": 0.1,
    "steps": 650,
    "row_length": 64,
    "rows_per_batch": 12,
    "learning_rate": 3e-3,
    "warmup_steps": 30,
    "weight_decay": 0.01,
    "adam_beta2": 0.95,
    "background_sentences": 20000,
    # A fixed thread count keeps the order of float reductions, hence the bytes, fixed.
    "threads": 2,
}

# ChatML-like. Content is trimmed and every header ends in a newline, which is its own
# token, so the prompt rendered with add_generation_prompt=True is always a token prefix of
# prompt + completion (TRL derives the completion-only loss mask from that). The turn ends
# with the eos token inside the generation block: the model is trained to emit it, and
# generation stops there.
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


def background_text() -> list[str]:
    """The pretraining sentences, generated from the recipe's seed."""
    return generate_background_text(
        count=int(PRETRAINING_SETTINGS["background_sentences"]), seed=int(PRETRAINING_SETTINGS["seed"])
    )



def tokenizer_training_text(background: list[str]) -> list[str]:
    """What the BPE learns from, in a fixed order: the sample rows as chat-like text, then the background."""
    lines = []
    for row in generate_sample_rows():
        prompt = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
        lines.append(f"user\n{prompt}\nassistant\n{row['output']}")
    return lines + background



@functools.cache  # regenerating the background text costs ~0.2 s, and `plan` asks for the dir every time
def recipe_hash() -> str:
    """Short hash of everything that decides the built bytes: settings, template, training text."""
    text = "\n".join(tokenizer_training_text(background_text()))
    recipe = {
        "version": RECIPE_VERSION,
        "architecture": TINY_ARCHITECTURE,
        "tokenizer": TOKENIZER_SETTINGS,
        "pretraining": PRETRAINING_SETTINGS,
        "chat_template": CHAT_TEMPLATE,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    encoded = json.dumps(recipe, sort_keys=True).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:12]



def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """The directory the current recipe builds into under `cache_dir` (it may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    return root / "models" / f"tiny-llama-{recipe_hash()}"



def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on `texts` and wrap it with its special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    # Every whitespace character is its own token, so a word is the same token after a
    # space, a newline or a chat header ("Paris" in "is Paris." and as an answer). With
    # GPT-2 style "Ġword" tokens the facts learned in pretraining would sit on other ids
    # than the answers after "assistant\n".
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
    # Plain text gets a leading bos like Llama tokenizers do. Chat templates write their own
    # bos and are tokenized without special tokens, so a conversation never gets two.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, backend.token_to_id(BOS_TOKEN))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[TURN_START_TOKEN],
        chat_template=CHAT_TEMPLATE,
        model_max_length=int(TINY_ARCHITECTURE["max_position_embeddings"]),
    )
