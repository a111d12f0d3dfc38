"""Which names and values are credentials, so they are never shown, logged or sent anywhere.

By name: a key such as `hub_token`, `wandb_api_key` or `training.secret` is a credential
whatever it holds. Names that merely mention tokens as units of text (`max_new_tokens`,
`pad_token`) are not.

By value: a password inside a URI (`http://user:pw@host`) is masked wherever it appears, and a
value a config took from the environment (`${oc.env:NAME}`) is shown as that text again in every
file, log, tracker and message (`scrub`): it is resolved in memory only.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

_SECRET_NAME = re.compile(r"(^|\.)token$|(hub|auth|access|hf)_token|api_?key|secret|password|credential",
                          re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True when a setting called `name` holds a credential."""
    return bool(_SECRET_NAME.search(name))


# Credentials inside a URI: scheme://user:password@host (or scheme://token@host).
_URI_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*)(?P<password>:[^\s/@]*)?@")
# Values shorter than this are not masked by value (a port, a flag or a count read from the
# environment is no credential, and masking "8" would mangle every number in a file).
_MIN_SECRET_LENGTH = 6
# Secret value → what is shown instead, for this process: values that came from the environment
# through `${oc.env:NAME}` (shown as that text) and passwords found inside URIs.
_known: dict[str, str] = {}


def mask_uri_credentials(text: str) -> str:
    """`http://user:pw@host` → `http://user:***@host`; a bare `https://TOKEN@host` → `https://***@host`."""
    def masked(match: re.Match) -> str:
        if match["password"] is None:
            return f"{match['scheme']}***@"
        return f"{match['scheme']}{match['user']}:***@"

    return _URI_CREDENTIALS.sub(masked, text)


def uri_credentials(text: str) -> list[str]:
    """The passwords (or bare tokens) inside the URIs of `text`."""
    return [(m["password"] or ":" + m["user"])[1:] for m in _URI_CREDENTIALS.finditer(text)
            if (m["password"] or m["user"])]


def remember_secret(value: str, shown: str = REDACTED) -> None:
    """From now on, `scrub` replaces `value` by `shown` in everything this process writes or prints."""
    if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH:
        _known[value] = shown


def secrets_known() -> bool:
    """Whether this process has met a value it must not write (an environment value, a URI
    password): run files are then written readable by their owner only."""
    return bool(_known)


def scrub(text: str) -> str:
    """`text` with every remembered secret replaced and URI credentials masked."""
    for value in sorted(_known, key=len, reverse=True):
        text = text.replace(value, _known[value])
    return mask_uri_credentials(text)


def scrub_tree(value):
    """`scrub` applied to every string inside nested dicts and lists (keys included)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_tree(key): scrub_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(item) for item in value]
    return value
