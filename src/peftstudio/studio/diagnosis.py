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
    if not (run_dir / "plan.json").is_file():
        return {"available": False, "reason": "the run stopped before writing its plan; see the log"}
    try:
        return {"available": True, **report.diagnose_run(run_dir).to_dict()}
    except Exception as error:  # noqa: BLE001 - a broken run dir must not break the job page
        return {"available": False, "reason": f"diagnose could not read the run: {error}"}
