"""A live watchdog: stops a run whose loss has turned NaN or infinite, before it burns more
compute on weights that can no longer recover."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftstudio.errors import PeftStudioError, Problem


class WatchdogStopped(PeftStudioError):
    """The run was stopped by `NanWatchdog`: no adapter was saved. `steps` are the logged
    steps whose loss was NaN/inf; the caller adds the diagnosis' overrides to the fix."""

    def __init__(self, steps: list[int], run_dir: Path, fix: str = ""):
        self.steps, self.run_dir = steps, run_dir
        super().__init__(Problem(
            "training", f"stopped by the watchdog: loss was NaN/inf for {len(steps)} consecutive logs "
                        f"(steps {steps[0]}-{steps[-1]}); no adapter was saved",
            fix or "lower optim.learning_rate, then train again with training.resume=never"))


class NanWatchdog(TrainerCallback):
    """Stops training after `patience` consecutive logged losses that are NaN or infinite.

    Nothing is evaluated or checkpointed once it trips: a NaN checkpoint would become the one
    `resume=auto` picks, and an adapter full of NaN is worse than none. The caller reads
    `tripped` after `trainer.train()` returns and reports the failure.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.bad_steps: list[int] = []
        self.tripped = False

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if math.isfinite(loss):
            self.bad_steps = []
            return
        self.bad_steps.append(state.global_step)
        if len(self.bad_steps) >= self.patience:
            self.tripped = True
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False
