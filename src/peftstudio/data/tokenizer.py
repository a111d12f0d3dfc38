"""The tokenizer a run trains with: loaded without weights, its chat template chosen and
checked against the vocabulary, its pad token made safe. `plan` and `train` both go through
`prepare_tokenizer`, so what `plan` measures and reports is exactly what training uses.

Chat template: the tokenizer's own unless `data.chat_template` names one (see
`templates.known_templates`), gives a Jinja string, or a .jinja file. A chosen template whose
control tokens are not single tokens of this tokenizer is refused (the model would learn to
spell `<|im_end|>` and never emit its real stop token), unless `data.add_special_tokens=true`
adds them. Conversational data on a tokenizer without a template is refused with the
templates that fit.

Pad token: padding is never a new token. Labels and attention masks are ours (padding is
masked out of both), so any id serves: the tokenizer's pad when distinct from EOS, else unk,
else a pad-named or reserved token already in the vocabulary, else EOS itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, ModelSettings, RunConfig
from peftstudio.data.templates import ChatFormat, chat_format, fitting_templates, foreign_tokens, template_text
from peftstudio.errors import EnvironmentProblem, Problem, UserError

CONVERSATIONAL_FORMATS = ("instruction", "chat", "sharegpt")
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
# Vocabulary entries meant for padding or left free by the vendor, tried in this order.
PAD_NAMED = re.compile(r"^<\|?(pad|finetune_right_pad_id|finetune_right_pad)\|?>$|^\[PAD\]$")
RESERVED = re.compile(r"^<\|?reserved_special_token_\d+\|?>$|^<unused\d+>$")


@dataclass
class TokenizerSetup:
    """The ready tokenizer and what was decided about it (printed by `plan`)."""

    tokenizer: object
    template_reason: str
    pad_reason: str
    chat: ChatFormat
    added_tokens: list[str] = field(default_factory=list)  # data.add_special_tokens=true: new vocabulary entries
    image_grid: str | None = None  # data.image_grid, applied when image rows are tokenized
    processor_loader: object = None  # () -> the model's processor over this tokenizer (image-text models)
    _processor: object = None

    def image_processor(self):
        """The model's processor (images -> pixels and image tokens), loaded on first need."""
        if self._processor is None:
            if self.processor_loader is None:
                raise UserError(Problem("data.path", "the data has images, but this model has no image processor",
                                        "use an image-text model (model=tiny_vision, gemma3_4b, qwen2_5_vl_3b, ...)"))
            self._processor = self.processor_loader()
        return self._processor

    @property
    def has_generation_markers(self) -> bool:
        return self.chat.masking == "markers"


def prepare_tokenizer(config: RunConfig, data_format: str) -> TokenizerSetup:
    """Load the run's tokenizer (no weights), set and check its chat template, choose its pad token."""
    tokenizer = load_plain_tokenizer(config)
    template_reason = apply_chat_template_choice(tokenizer, config.data.chat_template, data_format)
    added = _check_vocabulary(tokenizer, config) if config.data.chat_template is not None else []
    pad_reason = choose_pad_token(tokenizer)
    from peftstudio.data.vision_processor import processor_loader

    return TokenizerSetup(tokenizer, template_reason, pad_reason, chat_format(tokenizer), added,
                          config.data.image_grid, processor_loader(config, tokenizer))


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
    from peftstudio.data.embedded_vision import EMBEDDED_VISION_ID, embedded_vision_dir, vision_tokenizer

    if config.model.name_or_path == EMBEDDED_VISION_ID:
        built = embedded_vision_dir()
        return _load_local(built, config) if built.is_dir() else vision_tokenizer()
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
        tokenizer.chat_template, origin = template_text(choice)
        return f"data.chat_template: {origin}"
    if tokenizer.chat_template:
        return "the tokenizer's own chat template"
    if data_format in CONVERSATIONAL_FORMATS:
        raise UserError(Problem("data.chat_template", f"{data_format} data needs a chat template, and this tokenizer has none "
                                "(a base model)", _template_suggestion(tokenizer)))
    return "none needed: text is trained as is" if data_format == "text" else \
        "the tokenizer has none: prompt and completion are joined as plain text"


def _template_suggestion(tokenizer) -> str:
    fitting = fitting_templates(tokenizer)
    if fitting:
        return f"set data.chat_template to a template that fits this tokenizer ({', '.join(fitting)}), a Jinja string " \
               "or a .jinja file"
    return "no known template fits this tokenizer's control tokens: set data.chat_template to your own Jinja string " \
           "or .jinja file using its tokens, or data.chat_template=chatml with data.add_special_tokens=true (adds " \
           "<|im_start|> and <|im_end|>; their embedding rows are trained and saved with the adapter)"


def _check_vocabulary(tokenizer, config: RunConfig) -> list[str]:
    """Refuse a chosen template whose control tokens this tokenizer splits, unless the user
    opted in to adding them (data.add_special_tokens=true). Returns the tokens added."""
    foreign = foreign_tokens(tokenizer, tokenizer.chat_template)
    if not foreign:
        return []
    if config.data.add_special_tokens:
        tokenizer.add_special_tokens({"extra_special_tokens": list(foreign)}, replace_extra_special_tokens=False)
        return list(foreign)
    listed = ", ".join(f"{token!r} ({count} pieces)" for token, count in foreign.items())
    fitting = fitting_templates(tokenizer)
    own = "remove data.chat_template to use the model's own template, or " if _has_own_template(config) else ""
    fits = f"use a template that fits this tokenizer ({', '.join(fitting)}), or " if fitting else ""
    raise UserError(Problem("data.chat_template", f"{config.data.chat_template!r} writes control tokens this tokenizer "
                            f"does not have as single tokens: {listed}; the model would learn to spell them as text "
                            "and never emit its real end-of-turn token",
                            f"{own}{fits}set data.add_special_tokens=true to add them (their embedding rows are then "
                            "trained and saved with the adapter)"))


def _has_own_template(config: RunConfig) -> bool:
    own = load_plain_tokenizer(config)
    return bool(own.chat_template)


def choose_pad_token(tokenizer) -> str:
    """Pick a pad id without growing the vocabulary (see the module doc); returns what was done."""
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad_id is not None and pad_id != eos_id:
        return f"pad token {tokenizer.pad_token!r} (id {pad_id}) is distinct from EOS"
    problem = "the tokenizer has no pad token" if pad_id is None else f"pad token = EOS {tokenizer.eos_token!r}"
    if tokenizer.unk_token is not None and tokenizer.unk_token_id not in (None, eos_id):
        tokenizer.pad_token = tokenizer.unk_token
        return f"{problem}: padding with unk {tokenizer.unk_token!r} (id {tokenizer.unk_token_id})"
    spare = _spare_token(tokenizer)
    if spare is not None:
        tokenizer.pad_token = spare
        return f"{problem}: padding with {spare!r} (id {tokenizer.pad_token_id}), already in the vocabulary"
    tokenizer.pad_token = tokenizer.eos_token
    return f"{problem}: padding with EOS {tokenizer.eos_token!r}; padding is masked out of labels and attention, so " \
           "EOS stays a label the model learns to emit"


def _spare_token(tokenizer) -> str | None:
    vocabulary = tokenizer.get_vocab()
    for pattern in (PAD_NAMED, RESERVED):
        matches = sorted((vocabulary[token], token) for token in vocabulary if pattern.match(token))
        if matches:
            return matches[0][1]
    return None


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
    return tokenizer  # its pad token is chosen by choose_pad_token


def unreachable_model(settings: ModelSettings, error: OSError) -> EnvironmentProblem:
    """The error for a model or tokenizer that cannot be loaded from the hub or disk."""
    return EnvironmentProblem(Problem(
        "model.name_or_path",
        f"cannot load {settings.name_or_path!r}: {str(error).splitlines()[0]}",
        "check the hub id and your network/HF_TOKEN, or point model.name_or_path at a local model directory",
    ))
