"""Chat templates: which one a run uses, whether it fits the tokenizer, how its assistant turns
are found for the loss, and which token ends a turn.

Real chat templates carry no `{% generation %}` markers, so assistant-only loss needs another
way to find the answers. Two are used, decided once per run by probing the template with a
small conversation:
- `markers`: the template has them, or TRL ships a `_training` variant of it that renders the
  very same tokens as the original and marks every answer with its end-of-turn token;
- `located`: each assistant message's text is found in the rendered conversation, in order,
  and extended over the end-of-turn token that follows it (data/turns.py). This works on any
  template that renders a message's text as given (trimmed), including templates that rewrite
  earlier turns (Qwen3's think stripping) or fold the system prompt into the first user turn.

The end-of-turn token is read from the rendering, not guessed: the first special token after
an answer (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, `</s>`, `<|end|>`, ...).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from peftstudio.errors import Problem, UserError

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
# Strings that look like control tokens: <|im_start|>, <start_of_turn>, </s>. `<<SYS>>` and
# `[INST]` are plain text in the templates that use them, so they are not checked.
SPECIAL_LOOKING = re.compile(r"(?<!<)<[|｜]?/?[A-Za-z][\w.▁-]*[|｜]?>(?!>)")
PROBE_ANSWER = "Hi there, glad to help"
PROBE = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": PROBE_ANSWER},
         {"role": "user", "content": "Thanks"}]
PROBE_WITH_SYSTEM = [{"role": "system", "content": "Be brief."}, *PROBE,
                     {"role": "assistant", "content": "You are welcome"}]

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


@dataclass(frozen=True)
class ChatFormat:
    """How tokenization finds the trained spans of a conversation with this template."""

    masking: str  # "markers", "located", or "none" (no template: plain text)
    end_of_turn: str | None  # the token text that ends an assistant turn, when the template has one
    closes_last_turn: bool  # False: the template leaves the final assistant turn open (the token is appended)
    training_template: str | None  # TRL's training variant, passed to apply_chat_template; None: the tokenizer's own
    reason: str


def trl_templates() -> dict[str, Path]:
    """TRL's shipped templates by file stem (originals and `_training` variants), read from its
    package folder without importing trl (which takes seconds)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "chat_templates"
    return {path.stem: path for path in sorted(folder.glob("*.jinja"))}


def known_templates() -> dict[str, str]:
    """Template name → Jinja text a user may name in `data.chat_template`: peftstudio's `chatml`
    and the original templates TRL ships (the model families' own)."""
    templates = {"chatml": CHATML_TEMPLATE}
    for stem, path in trl_templates().items():
        if not stem.endswith("_training"):
            templates[stem] = path.read_text(encoding="utf-8")
    return templates


def template_text(choice: str) -> tuple[str, str]:
    """(Jinja text, where it came from) for a `data.chat_template` value."""
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


def render(tokenizer, messages: list[dict], template: str | None = None, **options) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template, **options)


def foreign_tokens(tokenizer, template: str) -> dict[str, int]:
    """Control-token strings the template writes that are not one token of this tokenizer:
    {token: pieces it splits into}. Such a template trains the model to spell its turn
    markers as text and never to emit its real stop token."""
    try:
        rendered = render(tokenizer, PROBE_WITH_SYSTEM, template, add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that refuses the probe is judged on its source text
        rendered = template
    own = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token} - {None}
    pieces = {}
    for token in dict.fromkeys(SPECIAL_LOOKING.findall(rendered)):
        if token in own:
            continue
        count = len(tokenizer(token, add_special_tokens=False)["input_ids"])
        if count != 1:
            pieces[token] = count
    return pieces


def fitting_templates(tokenizer) -> list[str]:
    """The known templates whose control tokens are all single tokens of this tokenizer."""
    fitting = []
    for name, text in known_templates().items():
        try:
            if not foreign_tokens(tokenizer, text):
                fitting.append(name)
        except Exception:  # noqa: BLE001 - a template that cannot render here does not fit
            continue
    return fitting


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (named ones and added tokens marked special)."""
    ids = set(tokenizer.all_special_ids)
    ids.update(index for index, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def end_of_turn_after(tokenizer, text: str) -> str | None:
    """The special token that opens `text` (after whitespace), as written in `text`."""
    stripped = text.lstrip()
    if not stripped:
        return None
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    if not encoded["input_ids"] or encoded["input_ids"][0] not in special_ids(tokenizer):
        return None
    start, end = encoded["offset_mapping"][0]
    return stripped[start:end]


def chat_format(tokenizer) -> ChatFormat:
    """Decide how answers are found with the tokenizer's chat template (see the module doc)."""
    template = tokenizer.chat_template
    if not template:
        return ChatFormat("none", None, True, None, "no chat template: prompt and completion are joined as plain text")
    end_of_turn, closes = _probe_end_of_turn(tokenizer, template)
    if GENERATION_MARKER.search(template):
        return ChatFormat("markers", end_of_turn, closes, None, "the template's own {% generation %} markers")
    variant = _trl_training_variant(tokenizer, template, end_of_turn)
    if variant is not None:
        return variant
    stop = f"each ends with {end_of_turn!r}" if end_of_turn else "the template writes no end-of-turn token after them"
    opened = "" if closes else f"; the template leaves the last turn open, so {end_of_turn!r} is appended to it"
    return ChatFormat("located", end_of_turn, closes, None,
                      f"assistant turns located in the rendered conversation ({stop}{opened})")


def _probe_end_of_turn(tokenizer, template: str) -> tuple[str | None, bool]:
    try:
        followed = render(tokenizer, PROBE, template)
        last = render(tokenizer, PROBE[:2], template)
    except Exception:  # noqa: BLE001 - a template that refuses the probe: each record's rendering says why
        return tokenizer.eos_token, True
    at = followed.find(PROBE_ANSWER)
    token = end_of_turn_after(tokenizer, followed[at + len(PROBE_ANSWER):]) if at >= 0 else None
    if token is None:
        return None, True
    at = last.find(PROBE_ANSWER)
    closes = at >= 0 and last[at + len(PROBE_ANSWER):].lstrip().startswith(token)
    return token, closes


def _trl_training_variant(tokenizer, template: str, end_of_turn: str | None) -> ChatFormat | None:
    """TRL's `_training` variant of this exact template, when it renders the same tokens as the
    original and its markers cover every answer with its end-of-turn token."""
    files = trl_templates()
    name = next((stem for stem, path in files.items() if not stem.endswith("_training")
                 and f"{stem}_training" in files and path.read_text(encoding="utf-8") == template), None)
    if name is None:
        return None
    variant = files[f"{name}_training"].read_text(encoding="utf-8")
    try:
        original = tokenizer.apply_chat_template(PROBE_WITH_SYSTEM, tokenize=True, return_dict=True)["input_ids"]
        marked = tokenizer.apply_chat_template(PROBE_WITH_SYSTEM, chat_template=variant, tokenize=True, return_dict=True,
                                               return_assistant_tokens_mask=True)
    except Exception:  # noqa: BLE001 - e.g. a template without a system role: locate instead
        return None
    expected = [f"{PROBE_ANSWER}{end_of_turn}", f"You are welcome{end_of_turn}"]
    runs = [text.strip() for text in _marked_runs(tokenizer, marked["input_ids"], marked["assistant_masks"])]
    if list(marked["input_ids"]) != list(original) or runs != expected:
        return None
    return ChatFormat("markers", end_of_turn, True, variant,
                      f"TRL's training variant of the {name!r} template (checked: the same tokens as the original; "
                      f"it marks each answer and its {end_of_turn!r}, nothing else)")


def _marked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    runs, current = [], []
    for token, keep in zip(ids, mask):
        if keep:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs + ([tokenizer.decode(current)] if current else [])


def stop_token_ids(tokenizer, generation_eos: int | list[int] | None = None) -> list[int]:
    """Every token generation must stop at: the model's generation config list, the tokenizer's
    EOS and the template's end-of-turn token (Gemma ends a reply with <end_of_turn>, not <eos>)."""
    ids = [generation_eos] if isinstance(generation_eos, int) else list(generation_eos or [])
    ids.append(tokenizer.eos_token_id)
    if tokenizer.chat_template:
        end_of_turn, _ = _probe_end_of_turn(tokenizer, tokenizer.chat_template)
        if end_of_turn is not None:
            ids.append(tokenizer.convert_tokens_to_ids(end_of_turn))
    return [token for token in dict.fromkeys(ids) if token is not None]
