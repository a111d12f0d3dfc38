"""Every environment variable peftstudio honours, read in this one module.

Production code asks this module, never `os.environ`, so the full list of what changes
peftstudio's behaviour from outside lives here (and in the README's table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# name → what it does; the README's table is this list.
HONOURED = {
    "PEFTSTUDIO_CACHE": "where the embedded model is built and cached (default ~/.cache/peftstudio)",
    "RANK / WORLD_SIZE / LOCAL_RANK": "set by torchrun / accelerate launch: this process is a worker of a multi-process run",
}


def cache_root() -> Path:
    """Where peftstudio caches what it builds: `$PEFTSTUDIO_CACHE`, else `~/.cache/peftstudio`."""
    configured = os.environ.get("PEFTSTUDIO_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "peftstudio"


@dataclass(frozen=True)
class ProcessPlace:
    """Where this process stands in a multi-process run, as its launcher (torchrun, accelerate)
    told it; one process alone is rank 0 of 1 with no local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def launched(self) -> bool:
        """True inside a worker that a launcher started (it trains in place, never launches)."""
        return self.local_rank is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_place() -> ProcessPlace:
    """This process's place, from the launcher's RANK / WORLD_SIZE / LOCAL_RANK."""
    local = os.environ.get("LOCAL_RANK")
    return ProcessPlace(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                        int(local) if local is not None else None)
