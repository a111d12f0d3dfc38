"""`peftstudio diagnose` findings for a failed job's page, when this build has `diagnose`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


def diagnose_run(run_dir: Path) -> dict[str, Any]:
    """The diagnosis as JSON, or why there is none."""
    try:
        report = importlib.import_module("peftstudio.diagnose.report")
    except ImportError:
        return {"available": False, "reason": "`diagnose` is not in this build"}
    from peftstudio.errors import PeftStudioError

    try:
        return {"available": True, **report.diagnose_run(run_dir).to_dict()}
    except PeftStudioError:
        return {"available": False, "reason": "the run stopped before writing its config or metrics; see the log"}
