"""`peftstudio diagnose` findings for a failed job's page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftstudio.diagnose import report
from peftstudio.errors import PeftStudioError


def diagnose_run(run_dir: Path) -> dict[str, Any]:
    """The diagnosis as JSON, or why there is none."""
    try:
        return {"available": True, **report.diagnose_run(run_dir).to_dict()}
    except PeftStudioError:
        return {"available": False, "reason": "the run stopped before writing its config or metrics; see the log"}
