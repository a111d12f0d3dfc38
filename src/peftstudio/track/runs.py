"""The run directory: where a run's outputs live and how they are written.

    RUN_DIR/config.resolved.yaml   the config with every auto resolved (no secrets)
    RUN_DIR/plan.json              the whole plan: provenance, hardware, data, schedule
    RUN_DIR/metrics.jsonl          one JSON object per log / eval step
    RUN_DIR/adapter/               PEFT adapter (adapter_config.json, adapter_model.safetensors)
    RUN_DIR/loss.png               the loss curve
    RUN_DIR/tensorboard/           event files when logging.tensorboard is on
    RUN_DIR/train.log              the run's log
    RUN_DIR/summary.json           how the run ended: final step, early stop, best checkpoint
    RUN_DIR/wandb/, RUN_DIR/mlruns/ tracker files when logging.wandb / logging.mlflow is on

Files are written to a temporary name and renamed, so a killed run never leaves a
half-written output that looks complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from peftstudio.files import write_text
from peftstudio.redact import scrub, scrub_tree, secrets_known


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "RunDir":
        return cls(Path(path).expanduser())

    @property
    def config(self) -> Path:
        return self.root / "config.resolved.yaml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def write_plan(self, plan_json: str, config: dict) -> None:
        """plan.json and config.resolved.yaml, without secrets (redact.py), owner-only when the
        run met one."""
        self.root.mkdir(parents=True, exist_ok=True)
        private = secrets_known()
        write_text(self.plan, scrub(plan_json), private)
        write_text(self.config, yaml.safe_dump(scrub_tree(config), sort_keys=False), private)
