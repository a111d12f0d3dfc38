"""An Ollama Modelfile beside a GGUF, with the model's chat template in Ollama's Go-template form.

A Jinja chat template cannot be translated in general, so the turn structure is measured
instead: the template is rendered with a marker as each message's content, which yields the text
before and after a system, user and assistant turn, the text before the first turn and the
generation prompt. Those pieces fill a fixed Go template over `.Messages`. The result is then
checked: the pieces, put together the way the Go template puts them, must reproduce the Jinja
rendering of a conversation with every role; when they do not (a template that treats the first
turn differently, say), no Modelfile is claimed correct and export says why.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = "PEFTSTUDIOMARKER7F3A"


@dataclass(frozen=True)
class TurnPieces:
    start: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    system: tuple[str, str] | None


class TemplateNotDerivable(ValueError):
    """The chat template's turns are not a fixed prefix and suffix per role."""


def _split(text: str) -> tuple[str, str]:
    before, marker, after = text.partition(MARKER)
    if not marker or MARKER in after:
        raise TemplateNotDerivable("a message's content does not appear exactly once")
    return before, after


def _after(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise TemplateNotDerivable("a longer conversation does not begin with the shorter one's text")
    return text[len(prefix):]


def measure_turns(render) -> TurnPieces:
    """The pieces of the template `render(messages, add_generation_prompt) -> str`."""
    user, assistant = {"role": "user", "content": MARKER}, {"role": "assistant", "content": MARKER}
    one = render([user], False)
    two = render([user, assistant], False)
    three = render([user, assistant, user], False)
    generation = _after(render([user], True), one)
    assistant_turn = _split(_after(two, one))
    user_turn = _split(_after(three, two))
    head, _ = _split(one)
    if not head.endswith(user_turn[0]):
        raise TemplateNotDerivable("the first user turn is rendered differently from later ones")
    start = head[:len(head) - len(user_turn[0])]
    try:
        with_system = render([{"role": "system", "content": MARKER}, user], False)
        system = _split(_after(with_system, start).removesuffix(_after(one, start)))
    except Exception:  # noqa: BLE001 - a template that refuses a system turn has none
        system = None
    return TurnPieces(start, user_turn, assistant_turn, generation, system)


def assemble(pieces: TurnPieces, messages: list[dict]) -> str:
    """What the Go template written by `go_template` renders for `messages` (Ollama adds the
    generation prompt after a final user turn)."""
    text = pieces.start
    for index, message in enumerate(messages):
        prefix, suffix = {"user": pieces.user, "assistant": pieces.assistant}.get(message["role"]) or pieces.system
        last = index == len(messages) - 1
        text += prefix + message["content"] + ("" if last and message["role"] == "assistant" else suffix)
        if last and message["role"] == "user":
            text += pieces.generation
    return text


def go_template(pieces: TurnPieces) -> str:
    """Ollama's TEMPLATE over .Messages; one line without whitespace trimming, so every newline
    of the pieces is kept."""
    for piece in (pieces.start, *pieces.user, *pieces.assistant, pieces.generation, *(pieces.system or ())):
        if "{{" in piece or '"""' in piece:
            raise TemplateNotDerivable("a turn's text contains '{{' or '\"\"\"'")
    system = (f'{{{{ if eq .Role "system" }}}}{pieces.system[0]}{{{{ .Content }}}}{pieces.system[1]}{{{{ else }}}}'
              if pieces.system else "")
    return (f"{pieces.start}{{{{ range $i, $_ := .Messages }}}}{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}"
            f"{system}{{{{ if eq .Role \"user\" }}}}{pieces.user[0]}{{{{ .Content }}}}{pieces.user[1]}"
            f"{{{{ if $last }}}}{pieces.generation}{{{{ end }}}}"
            f"{{{{ else if eq .Role \"assistant\" }}}}{pieces.assistant[0]}{{{{ .Content }}}}"
            f"{{{{ if not $last }}}}{pieces.assistant[1]}{{{{ end }}}}{{{{ end }}}}"
            f"{'{{ end }}' if pieces.system else ''}{{{{ end }}}}")


def modelfile(tokenizer, gguf_name: str, stops: list[str]) -> tuple[str, str]:
    """(Modelfile text, what was checked). Raises TemplateNotDerivable when the template's turns
    cannot be expressed for Ollama."""
    def render(messages, generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    if not tokenizer.chat_template:
        raise TemplateNotDerivable("the tokenizer has no chat template")
    pieces = measure_turns(render)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Name a colour."}]
    if pieces.system is not None:
        conversation.insert(0, {"role": "system", "content": "Be brief."})
    if assemble(pieces, conversation) != render(conversation, True):
        raise TemplateNotDerivable("the measured turns do not reproduce the template on a whole conversation")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{go_template(pieces)}"""',
             *(f'PARAMETER stop "{stop}"' for stop in stops)]
    roles = "system, user, assistant" if pieces.system else "user, assistant"
    return "\n".join(lines) + "\n", f"chat template turns ({roles}) reproduce the Jinja rendering of a conversation"
