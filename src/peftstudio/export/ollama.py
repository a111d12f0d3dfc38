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
    default_system: str = ""  # what the template writes when the conversation has no system turn
    system: tuple[str, str] | None = None


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
    before_user = head[:len(head) - len(user_turn[0])]
    try:
        with_system = render([{"role": "system", "content": MARKER}, user], False)
    except Exception:  # noqa: BLE001 - a template that refuses a system turn has none
        return TurnPieces(before_user, user_turn, assistant_turn, generation)
    system_head, system_rest = with_system.split(MARKER, 1) if MARKER in with_system else (with_system, "")
    # The text both begin with is the start; from there, a system turn or the default system text.
    start = before_user[:next((i for i, (a, b) in enumerate(zip(before_user, system_head)) if a != b),
                              min(len(before_user), len(system_head)))]
    user_tail = user_turn[0] + MARKER + user_turn[1]
    system = (system_head[len(start):], system_rest.removesuffix(user_tail)) if system_rest.endswith(user_tail) else None
    return TurnPieces(start, user_turn, assistant_turn, generation, before_user[len(start):], system)


def assemble(pieces: TurnPieces, messages: list[dict]) -> str:
    """What the Go template written by `go_template` renders for `messages` (Ollama adds the
    generation prompt after a final user turn)."""
    text = pieces.start
    if messages[0]["role"] != "system":
        text += pieces.default_system
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
    texts = (pieces.start, pieces.default_system, *pieces.user, *pieces.assistant, pieces.generation,
             *(pieces.system or ()))
    if any("{{" in piece or '"""' in piece for piece in texts):
        raise TemplateNotDerivable("a turn's text contains '{{' or '\"\"\"'")
    default = (f'{{{{ if ne (index .Messages 0).Role "system" }}}}{pieces.default_system}{{{{ end }}}}'
               if pieces.default_system else "")
    system = (f'{{{{ if eq .Role "system" }}}}{pieces.system[0]}{{{{ .Content }}}}{pieces.system[1]}{{{{ else }}}}'
              if pieces.system else "")
    return (f"{pieces.start}{default}{{{{ range $i, $_ := .Messages }}}}"
            f"{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}"
            f"{system}{{{{ if eq .Role \"user\" }}}}{pieces.user[0]}{{{{ .Content }}}}{pieces.user[1]}"
            f"{{{{ if $last }}}}{pieces.generation}{{{{ end }}}}"
            f"{{{{ else if eq .Role \"assistant\" }}}}{pieces.assistant[0]}{{{{ .Content }}}}"
            f"{{{{ if not $last }}}}{pieces.assistant[1]}{{{{ end }}}}{{{{ end }}}}"
            f"{'{{ end }}' if pieces.system else ''}{{{{ end }}}}")


CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Name a colour."}]


def modelfile(tokenizer, gguf_name: str, stops: list[str], runtime_bos: str | None = None) -> tuple[str, str]:
    """(Modelfile text, what was checked). Raises TemplateNotDerivable when the template's turns
    cannot be expressed for Ollama. `runtime_bos`: the BOS text llama.cpp adds itself (the GGUF's
    add_bos_token), left out of the template so a prompt does not start with two."""
    def render(messages, generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    if not tokenizer.chat_template:
        raise TemplateNotDerivable("the tokenizer has no chat template")
    pieces = measure_turns(render)
    if assemble(pieces, CONVERSATION) != render(CONVERSATION, True):
        raise TemplateNotDerivable("the measured turns do not reproduce the template on a whole conversation")
    with_system = [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    if pieces.system is not None and assemble(pieces, with_system) != render(with_system, True):
        pieces = TurnPieces(pieces.start, pieces.user, pieces.assistant, pieces.generation, pieces.default_system)
    if runtime_bos and pieces.start.startswith(runtime_bos):
        pieces = TurnPieces(pieces.start.removeprefix(runtime_bos), pieces.user, pieces.assistant, pieces.generation,
                            pieces.default_system, pieces.system)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{go_template(pieces)}"""',
             *(f'PARAMETER stop "{stop}"' for stop in stops)]
    checked = ("chat template turns (system, user, assistant) reproduce the Jinja rendering of conversations with "
               "and without a system turn" if pieces.system else
               "chat template turns (user, assistant) reproduce the Jinja rendering of a conversation; its system "
               "turn is not a fixed prefix and suffix, so a SYSTEM message is not passed on")
    return "\n".join(lines) + "\n", checked
