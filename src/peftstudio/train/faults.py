"""Faults a test asks a training run to suffer at an exact point, so resume, the watchdog and a
sweep's retry are tested against a real SIGKILL or a real NaN, not a simulation.

A `Faults` value is passed to `api.train` (and on to the trainer); a subprocess gets it as the
hidden `--inject-fault` option of `train` and `sweep`, in the text form `str(faults)` writes
and `Faults.parse` reads: `kill_at_step=7`, or several joined by commas.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from peftstudio.errors import Problem, UserError


@dataclass(frozen=True)
class Faults:
    """Steps at which to fail; None: never. No faults is the default of every run."""

    kill_at_step: int | None = None
    """SIGKILL at the end of this optimizer step."""
    kill_in_checkpoint: int | None = None
    """SIGKILL while the checkpoint of this step is staged, before it is renamed into place."""
    term_at_step: int | None = None
    """SIGTERM at the end of this optimizer step (the run stops as a user's `kill` stops it)."""
    inf_weights: int | None = None
    """One adapter weight set to infinity before this step: the loss really turns NaN."""

    @classmethod
    def parse(cls, text: str | None) -> Faults:
        """`kind=step[,kind=step...]` (e.g. `kill_at_step=7`); empty or None: no faults."""
        kinds = [f.name for f in fields(cls)]
        steps: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            kind, _, step = part.partition("=")
            if kind not in kinds or not step.isdigit() or int(step) < 1:
                raise UserError(Problem("--inject-fault", f"{part!r} is not KIND=STEP",
                                        f"write e.g. kill_at_step=7; kinds: {', '.join(kinds)}"))
            steps[kind] = int(step)
        return cls(**steps)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) is not None)

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def as_arguments(self) -> list[str]:
        """The `train` arguments that give a subprocess the same faults (none when there are none)."""
        return ["--inject-fault", str(self)] if self else []

    def callbacks(self) -> list:
        """The trainer callbacks that inject the step faults (kill_in_checkpoint is the trainer's own)."""
        from peftstudio.train.callbacks import InfWeightsAtStep, KillAtStep, TermAtStep

        injected = []
        if self.kill_at_step is not None:
            injected.append(KillAtStep(self.kill_at_step))
        if self.term_at_step is not None:
            injected.append(TermAtStep(self.term_at_step))
        if self.inf_weights is not None:
            injected.append(InfWeightsAtStep(self.inf_weights))
        return injected


NO_FAULTS = Faults()
