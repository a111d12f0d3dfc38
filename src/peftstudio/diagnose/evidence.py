"""What a run left behind that a diagnosis reads: metrics, resolved config, plan and log."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftstudio.errors import Problem, UserError
from peftstudio.track.metrics import read_metrics
from peftstudio.track.runs import RunDir


@dataclass(frozen=True)
class RunEvidence:
    """A run's records, split into train logs and evaluations, plus its config and log text."""

    run_dir: Path
    train: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    config: dict[str, Any]
    plan: dict[str, Any] = field(default_factory=dict)
    log_text: str = ""

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value of the resolved config by dotted key, or `default` when absent."""
        value: Any = self.config
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        return value

    @property
    def losses(self) -> list[float]:
        return [float(r["loss"]) for r in self.train]

    @property
    def finite_losses(self) -> list[float]:
        return [loss for loss in self.losses if math.isfinite(loss)]


def read_evidence(path: Path) -> RunEvidence:
    """Read RUN_DIR; a missing dir or a dir with neither metrics nor config is a user error."""
    run_dir = RunDir.at(path)
    if not run_dir.root.is_dir():
        raise UserError(Problem(str(path), "run directory not found",
                                "pass the output_dir of a run (training.output_dir, default ./outputs)"))
    if not run_dir.metrics.is_file() and not run_dir.config.is_file():
        raise UserError(Problem(str(path), "not a run directory: no metrics.jsonl and no config.resolved.yaml",
                                "pass the output_dir of a run that peftstudio train started"))
    records = read_metrics(run_dir.metrics)
    config = yaml.safe_load(run_dir.config.read_text(encoding="utf-8")) if run_dir.config.is_file() else {}
    plan = _read_json(run_dir.plan)
    log_text = run_dir.log.read_text(encoding="utf-8", errors="replace") if run_dir.log.is_file() else ""
    return RunEvidence(run_dir.root, [r for r in records if "loss" in r], [r for r in records if "eval_loss" in r],
                       config or {}, plan, log_text)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
