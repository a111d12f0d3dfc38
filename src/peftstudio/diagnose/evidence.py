"""What a run left behind that a diagnosis reads: metrics, plan and log."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftstudio.plan.runplan import RunPlan
from peftstudio.plan.runs import read_run


@dataclass(frozen=True)
class RunEvidence:
    """A run's records, split into train logs and evaluations, plus its plan and log text."""

    run_dir: Path
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    plan: RunPlan | None = None
    log_text: str = ""

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value of the resolved config by dotted key, or `default` without a plan."""
        decision = self.plan.decisions.get(dotted) if self.plan is not None else None
        return decision.value if decision is not None else default

    @property
    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.train]

    @property
    def finite_losses(self) -> list[float]:
        return [loss for loss in self.losses if math.isfinite(loss)]


def read_evidence(path: Path) -> RunEvidence:
    """Read RUN_DIR through the typed run reader (a missing or foreign dir is a user error)."""
    record = read_run(path)
    return RunEvidence(record.paths.root, [r for r in record.metrics if "loss" in r],
                       [r for r in record.metrics if "eval_loss" in r], record.plan, record.log_text())
