"""The tokenizer a run trains with: loaded without weights, its chat template chosen, its pad
token made safe. `plan` and `train` both go through `prepare_tokenizer`, so what `plan`
measures and reports is exactly what training uses.

Chat template: the tokenizer's own unless `data.chat_template` names one (see
`known_templates`), gives a Jinja string, or a .jinja file. Conversational data
(instruction, chat, sharegpt) on a tokenizer without one is refused with the key to set.

Pad token: when it is missing or equal to EOS, padding would be indistinguishable from the
end of an answer (and collators that mask pad labels would mask every EOS: the model never
learns to stop). It is replaced by `unk` when that is a distinct token, else by a dedicated
`<|pad|>` token added to the vocabulary; the embedding matrix then grows to match
(`model.load.match_vocabulary`, applied identically at train and load time).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelSettings, RunConfig
from peftstudio.errors import EnvironmentProblem, Problem, UserError

ADDED_PAD_TOKEN = "<|pad|>"
CONVERSATIONAL_FORMATS = ("instruction", "chat", "sharegpt")
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

# ChatML with the assistant turn (and its end token) inside generation markers, so
# assistant-only loss knows which tokens to train on.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] | trim + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- message['content'] | trim + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass
class TokenizerSetup:
    """The ready tokenizer and what was decided about it (printed by `plan`)."""

    tokenizer: object
    template_reason: str
    pad_reason: str
    pad_added: bool
    has_generation_markers: bool


def known_templates() -> dict[str, str]:
    """Template name → Jinja text: peftstudio's `chatml` plus the templates TRL ships (their
    `_training` variants, which carry generation markers, where TRL has one). Read from
    files, without importing trl (which takes seconds)."""
    templates = {"chatml": CHATML_TEMPLATE}
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return templates
    folder = Path(list(spec.submodule_search_locations)[0]) / "chat_templates"
    for path in sorted(folder.glob("*.jinja")):
        name = path.stem.removesuffix("_training")
        if path.stem.endswith("_training") or name not in templates:
            templates[name] = path.read_text(encoding="utf-8")
    return templates


def prepare_tokenizer(config: RunConfig, data_format: str) -> TokenizerSetup:
    """Load the run's tokenizer (no weights), set its chat template, fix its pad token."""
    tokenizer = load_plain_tokenizer(config)
    template_reason = apply_chat_template_choice(tokenizer, config.data.chat_template, data_format)
    pad_reason, pad_added = fix_pad_token(tokenizer)
    markers = bool(tokenizer.chat_template and GENERATION_MARKER.search(tokenizer.chat_template))
    return TokenizerSetup(tokenizer, template_reason, pad_reason, pad_added, markers)


def load_plain_tokenizer(config: RunConfig):
    """The tokenizer as the model ships it. The embedded model's is rebuilt in memory when the
    model itself is not built yet (under a second; the same bytes the build writes)."""
    if config.model.name_or_path == EMBEDDED_MODEL_ID:
        from peftstudio.data.embedded import (embedded_model_dir, tokenizer_training_text, background_text,
                                               train_tokenizer)

        built = embedded_model_dir()
        if built.is_dir():
            return _load_local(built, config)
        return train_tokenizer(tokenizer_training_text(background_text()))
    local = Path(config.model.name_or_path).expanduser()
    return _load_local(local, config) if local.is_dir() else load_tokenizer(config.model.name_or_path, config.model)


def _load_local(directory: Path, config: RunConfig):
    # A generic tokenizer.json tokenizer loads without AutoTokenizer, which also reads the
    # model config and imports its modeling code: over a second of `plan`'s 3 s budget.
    import json

    settings = directory / "tokenizer_config.json"
    generic = settings.is_file() and (directory / "tokenizer.json").is_file() and \
        json.loads(settings.read_text(encoding="utf-8")).get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES
    if not generic:
        return load_tokenizer(str(directory), config.model)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def apply_chat_template_choice(tokenizer, choice: str | None, data_format: str) -> str:
    """Set `data.chat_template` on the tokenizer when given; refuse conversational data with
    no template at all. Returns the reason printed by `plan`."""
    if choice is not None:
        tokenizer.chat_template, origin = _template_text(choice)
        return f"data.chat_template: {origin}"
    if tokenizer.chat_template:
        return "the tokenizer's own chat template"
    if data_format in CONVERSATIONAL_FORMATS:
        names = ", ".join(sorted(known_templates())[:12])
        raise UserError(Problem("data.chat_template", f"{data_format} data needs a chat template, and this tokenizer has none "
                                "(a base model)", f"set data.chat_template to a name ({names}, ...), a Jinja string or a "
                                ".jinja file; chatml is a safe choice for a base model"))
    return "none needed: text is trained as is" if data_format == "text" else \
        "the tokenizer has none: prompt and completion are joined as plain text"


def _template_text(choice: str) -> tuple[str, str]:
    templates = known_templates()
    if choice in templates:
        return templates[choice], f"the known template {choice!r}"
    path = Path(choice).expanduser()
    if len(choice) < 4096 and "{" not in choice and path.is_file():
        return path.read_text(encoding="utf-8"), f"file {path}"
    if "{{" in choice or "{%" in choice:
        return choice, "an inline Jinja template"
    from difflib import get_close_matches

    close = get_close_matches(choice, list(templates), n=1)
    hint = f" (closest name: {close[0]!r})" if close else ""
    raise UserError(Problem("data.chat_template", f"{choice!r} is not a known template name, an existing file, or a "
                            f"Jinja string{hint}", f"use one of {', '.join(sorted(templates))}"))


def fix_pad_token(tokenizer) -> tuple[str, bool]:
    """Make pad distinct from EOS. Returns (what was done, whether a token was added)."""
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad_id is not None and pad_id != eos_id:
        return f"pad token {tokenizer.pad_token!r} (id {pad_id}) is distinct from EOS", False
    problem = "the tokenizer has no pad token" if pad_id is None else f"pad token = EOS {tokenizer.eos_token!r}"
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in (None, eos_id):
        tokenizer.pad_token = tokenizer.unk_token
        return f"{problem}: padding with unk {tokenizer.unk_token!r} (id {tokenizer.unk_token_id}) instead, so EOS stays a " \
               "label the model learns to emit", False
    size = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
    if len(tokenizer) == size:
        return f"{problem}: padding with {ADDED_PAD_TOKEN!r} (id {tokenizer.pad_token_id}), already in the vocabulary", False
    return f"{problem}: added a dedicated pad token {ADDED_PAD_TOKEN!r} (id {tokenizer.pad_token_id}); the embedding " \
           f"matrix grows to {len(tokenizer)} rows if smaller, at train and load time", True


def unavailable_tokenizer(config: RunConfig, error: Exception) -> EnvironmentProblem:
    return EnvironmentProblem(Problem("model.name_or_path", f"cannot load the tokenizer of {config.model.name_or_path!r}: "
                                      f"{str(error).splitlines()[0]}",
                                      "check the hub id and your network/HF_TOKEN, or use a local model directory"))


def load_tokenizer(location: str, settings: ModelSettings):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=settings.revision,
                                                  trust_remote_code=settings.trust_remote_code)
    except OSError as error:
        raise unreachable_model(settings, error) from None
    return tokenizer  # its pad token is made safe by fix_pad_token


def unreachable_model(settings: ModelSettings, error: OSError) -> EnvironmentProblem:
    """The error for a model or tokenizer that cannot be loaded from the hub or disk."""
    return EnvironmentProblem(Problem(
        "model.name_or_path",
        f"cannot load {settings.name_or_path!r}: {str(error).splitlines()[0]}",
        "check the hub id and your network/HF_TOKEN, or point model.name_or_path at a local model directory",
    ))
