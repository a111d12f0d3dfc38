"""Tokenize one conversation with the labels assistant-only loss uses, on any chat template.

With markers (data/templates.py) the template marks the answers. Otherwise each assistant
message is located in the rendered conversation: every message's (trimmed) text is searched
in order from where the previous one ended, so the user's words are never taken for an
answer, and each answer is extended over the whitespace and end-of-turn token that follow
it. The text is then tokenized piece by piece (prompt parts and answers), as generation sees
it, and checked against the whole rendering's tokens; a template that
renders a message differently from its text, or an answer not followed by the end-of-turn
token, is a `TurnProblem` naming the turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftstudio.data.templates import ChatFormat

IGNORE = -100  # the label value the loss skips


class TurnProblem(Exception):
    """A conversation the template cannot render, or whose answers cannot be located."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def prepare_messages(messages: list[dict], system_message: str) -> list[dict]:
    """Apply `data.system_message`: keep the system turns, merge them into the first user turn,
    or drop them (for templates without a system role, e.g. Gemma 2)."""
    if system_message == "keep" or not any(m["role"] == "system" for m in messages):
        return messages
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system_message == "merge":
        first_user = next((m for m in rest if m["role"] == "user"), None)
        if first_user is not None:
            first_user["content"] = f"{system}\n\n{first_user['content']}"
    return rest


def encode_conversation(tokenizer, messages: list[dict], chat: ChatFormat, trained_turns: str) -> Encoded:
    """input_ids and labels of a conversation; `trained_turns` is all or last (assistant turns)."""
    try:
        if chat.masking == "markers":
            return _with_markers(tokenizer, messages, chat, trained_turns)
        return _located(tokenizer, messages, chat, trained_turns)
    except TurnProblem:
        raise
    except Exception as error:  # noqa: BLE001 - jinja's TemplateError and the templates' raise_exception
        raise _template_refused(messages, error) from None


def _with_markers(tokenizer, messages, chat: ChatFormat, trained_turns: str) -> Encoded:
    encoded = tokenizer.apply_chat_template(messages, chat_template=chat.training_template, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    mask = _trim_whitespace(tokenizer, ids, list(encoded["assistant_masks"]))
    if trained_turns == "last":
        mask = _last_run(mask)
    return Encoded(ids, [token if keep else IGNORE for token, keep in zip(ids, mask)])


def _trim_whitespace(tokenizer, ids: list[int], mask: list[int]) -> list[int]:
    """Unmark whitespace-only tokens at the edges of each marked run: TRL's training variants
    mark the newline before an answer or after its end-of-turn token, which the model is never
    asked to write (the generation prompt ends with it; generation stops before it)."""
    blank = {i for i, token in enumerate(ids) if mask[i] and not tokenizer.decode([token]).strip()}
    mask = list(mask)
    for index in sorted(blank):  # leading edges, left to right
        if index == 0 or not mask[index - 1]:
            mask[index] = 0
    for index in sorted(blank, reverse=True):  # trailing edges, right to left
        if index + 1 == len(mask) or not mask[index + 1]:
            mask[index] = 0
    return mask


def _last_run(mask: list[int]) -> list[int]:
    end = max((i for i, keep in enumerate(mask) if keep), default=-1) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return [1 if start <= i < end else 0 for i in range(len(mask))]


def _located(tokenizer, messages, chat: ChatFormat, trained_turns: str) -> Encoded:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = answer_spans(text, messages, chat.end_of_turn)
    if not chat.closes_last_turn and messages[-1]["role"] == "assistant" and chat.end_of_turn:
        text += chat.end_of_turn
        spans[-1] = (spans[-1][0], len(text))
    trained = spans[-1:] if trained_turns == "last" else spans
    return _by_pieces(tokenizer, text, spans, trained) or _by_offsets(tokenizer, text, trained)


def _by_pieces(tokenizer, text: str, spans: list[tuple[int, int]], trained: list[tuple[int, int]]) -> Encoded | None:
    """Tokenize the prompt parts and the answers separately, so every answer starts on a token
    boundary exactly as when the model generates it after the prompt (a template that writes
    `[/INST]'Hello` would otherwise merge `]'` into one token). None when the pieces do not
    decode to the same text as the whole (a tokenizer that prefixes each piece with a space)."""
    cuts = sorted({0, len(text), *(bound for span in spans for bound in span)})
    ids, labels = [], []
    for start, end in zip(cuts, cuts[1:]):
        piece = list(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        ids += piece
        labels += piece if (start, end) in trained else [IGNORE] * len(piece)
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    return Encoded(ids, labels) if ids == list(whole) or tokenizer.decode(ids) == tokenizer.decode(whole) else None


def _by_offsets(tokenizer, text: str, trained: list[tuple[int, int]]) -> Encoded:
    """The whole text tokenized once; a token is trained when it overlaps an answer."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [token if any(start < span_end and end > span_start for span_start, span_end in trained) else IGNORE
              for token, (start, end) in zip(ids, encoded["offset_mapping"])]
    return Encoded(ids, labels)


def answer_spans(text: str, messages: list[dict], end_of_turn: str | None) -> list[tuple[int, int]]:
    """Character spans of each assistant answer (with its end-of-turn token) in `text`."""
    cursor, spans = 0, []
    for index, message in enumerate(messages):
        content = message["content"].strip()
        if not content:
            continue
        at = text.find(content, cursor)
        if message["role"] != "assistant":
            cursor = at + len(content) if at >= 0 else cursor
            continue
        if at < 0:
            raise TurnProblem(f"turn {index} (assistant): the chat template does not write this answer as given "
                              f"({_show(content)}), so its tokens cannot be located",
                              "use a template that writes message contents unchanged (data.chat_template), "
                              "or training.loss_on=all")
        end = at + len(content)
        spans.append((at, _after_end_of_turn(text, end, end_of_turn, index, last=index == len(messages) - 1)))
        cursor = spans[-1][1]
    return spans


def _after_end_of_turn(text: str, end: int, end_of_turn: str | None, index: int, last: bool) -> int:
    if end_of_turn is None:
        return end
    gap = len(text[end:]) - len(text[end:].lstrip())
    if text.startswith(end_of_turn, end + gap):
        return end + gap + len(end_of_turn)
    if last and not text[end:].strip():
        return end  # an open last turn: the caller appends the token
    raise TurnProblem(f"turn {index} (assistant): the answer is not followed by the end-of-turn token "
                      f"{end_of_turn!r} in the rendered conversation", "check the template (data.chat_template)")


def _template_refused(messages: list[dict], error: Exception) -> TurnProblem:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    roles = [m["role"] for m in messages]
    if "system" in message.lower() and "system" in roles:
        return TurnProblem(f"the chat template refuses this conversation: {message!r}",
                           "set data.system_message=merge (fold the system text into the first user turn) or "
                           "data.system_message=drop")
    if "alternat" in message.lower():
        turn = _alternation_break(roles)
        where = f" (turn {turn} is {roles[turn]!r} after {roles[turn - 1]!r})" if turn else ""
        return TurnProblem(f"the chat template refuses this conversation: {message!r}{where}",
                           "make user and assistant turns alternate, starting with user (merge consecutive turns "
                           "of one role), or data.system_message=merge if a system turn breaks the order")
    return TurnProblem(f"the chat template refuses this conversation: {message!r} (roles {roles})",
                       "fix the record, or choose another data.chat_template")


def _alternation_break(roles: list[str]) -> int | None:
    turns = [r for r in roles if r != "system"]
    offset = len(roles) - len(turns)
    for index, role in enumerate(turns):
        if role != ("user" if index % 2 == 0 else "assistant"):
            return index + offset
    return None


def _show(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")
