"""The one typed reader of a run directory: its plan, metrics, summary and log.

diagnose, the studio, sweeps, the cost model, generate and merge read a run through
`read_run`; none of them parses plan.json or config.resolved.yaml itself (the YAML is for
people). The paths are `track.runs.RunDir`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.plan.runplan import RunPlan
from peftstudio.track.metrics import read_metrics
from peftstudio.track.runs import RunDir


@dataclass(frozen=True)
class RunRecord:
    """What a run left behind. `plan` is None only for a run dir that has metrics but whose
    plan was never written (a run that failed while starting)."""

    paths: RunDir
    plan: RunPlan | None
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @property
    def config(self) -> RunConfig | None:
        return self.plan.config if self.plan is not None else None

    def log_text(self) -> str:
        log = self.paths.log
        return log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""


def read_run(path: str | Path, require_plan: bool = False) -> RunRecord:
    """Read RUN_DIR. A missing dir, a dir with neither plan nor metrics, and a plan of another
    format version are user errors; with `require_plan`, so is a dir without a plan."""
    paths = RunDir.at(path)
    if not paths.root.is_dir():
        raise UserError(Problem(str(path), "run directory not found",
                                "pass the output_dir of a run (training.output_dir, default ./outputs)"))
    has_plan = paths.plan.is_file()
    if not has_plan and (require_plan or not paths.metrics.is_file()):
        raise UserError(Problem(str(path), "not a peftstudio run directory (no plan.json"
                                + ("" if require_plan else " and no metrics.jsonl") + ")",
                                "pass the output_dir of a run that peftstudio train started"))
    plan = RunPlan.read(paths.plan) if has_plan else None
    return RunRecord(paths, plan, read_metrics(paths.metrics), _summary(paths.summary))


def _summary(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
