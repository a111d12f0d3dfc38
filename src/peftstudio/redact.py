"""Which names hold credentials, so their values are never shown, logged or sent anywhere.

The test is on the name, not the value: a key such as `hub_token`, `wandb_api_key` or
`training.secret` is a credential whatever it holds. Names that merely mention tokens as units
of text (`max_new_tokens`, `pad_token`) are not.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

_SECRET_NAME = re.compile(r"(^|\.)token$|(hub|auth|access|hf)_token|api_?key|secret|password|credential",
                          re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """True when a setting called `name` holds a credential."""
    return bool(_SECRET_NAME.search(name))
