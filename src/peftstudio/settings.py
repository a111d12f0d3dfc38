"""Every environment variable peftstudio honours, read in this one module.

Production code asks this module, never `os.environ`, so the full list of what changes
peftstudio's behaviour from outside lives here (and in the README's table).
"""

from __future__ import annotations

import os
from pathlib import Path

# name → what it does; the README's table is this list.
HONOURED = {
    "PEFTSTUDIO_CACHE": "where the embedded model is built and cached (default ~/.cache/peftstudio)",
}


def cache_root() -> Path:
    """Where peftstudio caches what it builds: `$PEFTSTUDIO_CACHE`, else `~/.cache/peftstudio`."""
    configured = os.environ.get("PEFTSTUDIO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "peftstudio"
