"""Run a sweep: an Optuna study in SQLite whose trials are ordinary `train` runs.

Each trial trains through `api.train` in its own directory (STUDY_DIR/trials/trial-NNN/run
and .../checkpoints) and is scored by the sweep's metric at its end. Evaluations are reported
to Optuna as they happen, so the pruner can stop a hopeless trial early. The study lives in
STUDY_DIR/study.db: running the same command again continues it, and a trial that was running
when the process died is retried with the same parameters, resuming from its checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftstudio.config.overrides import override_text
from peftstudio.errors import PeftStudioError
from peftstudio.sweep.spec import SweepSpec, load_sweep
from peftstudio.plan.runs import read_run
from peftstudio.train.faults import NO_FAULTS, Faults

DEFAULT_TRIALS = 10
# TPE samples at random until this many trials finished (Optuna's default, 10, would make a
# typical 5-20 trial fine-tuning sweep almost entirely random).
TPE_STARTUP_TRIALS = 3


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    seconds: float | None
    note: str = ""
    run_dir: str = ""


@dataclass
class SweepOutcome:
    spec: SweepSpec
    study_dir: Path
    trials: list[TrialSummary]
    best: TrialSummary | None
    ran: int
    wall_seconds: float
    files: dict[str, Path] = field(default_factory=dict)


class PruningReporter(TrainerCallback):
    """Reports the sweep metric to the Optuna trial at every evaluation (or log, for train
    loss) and stops training when the pruner says the trial is hopeless."""

    def __init__(self, trial, record_key: str):
        self.trial = trial
        self.record_key = record_key
        self.pruned_at: int | None = None

    def _report(self, value: float | None, state, control) -> None:
        if value is None:
            return
        self.trial.report(float(value), state.global_step)
        # The last step's value is the trial's result, not a reason to prune it.
        if state.global_step < state.max_steps and self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.record_key.startswith("eval_") and metrics and "eval_loss" in metrics:
            import math

            loss = metrics["eval_loss"]
            self._report(loss if self.record_key == "eval_loss" else math.exp(min(loss, 50)), state, control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.record_key == "loss" and logs and "loss" in logs:
            self._report(logs["loss"], state, control)


def open_study(spec: SweepSpec, study_dir: Path, default_name: str):
    """The study in STUDY_DIR/study.db, created or loaded, with the spec's sampler and pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are in the results table
    study_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=spec.name or default_name, storage=f"sqlite:///{(study_dir / 'study.db').resolve()}",
        load_if_exists=True, direction=spec.metric.goal, sampler=_sampler(spec), pruner=_pruner(spec))


def _sampler(spec: SweepSpec):
    import optuna

    if spec.method == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=TPE_STARTUP_TRIALS)


def _pruner(spec: SweepSpec):
    import optuna

    if spec.pruner.type == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.n_startup_trials,
                                       n_warmup_steps=spec.pruner.n_warmup_steps)


def retry_interrupted(study) -> list[int]:
    """Trials left RUNNING by a process that died are marked failed and queued again with the
    same parameters and directory (recorded as `retry_of`), so they resume from their checkpoints."""
    from optuna.trial import TrialState

    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _queue_retry(study, trial)
        retried.append(trial.number)
    return retried


def _queue_retry(study, trial) -> None:
    """Mark `trial` failed (if still running) and queue its parameters and directory again."""
    from optuna.trial import TrialState

    if trial.state == TrialState.RUNNING:
        study.tell(trial.number, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"trial_dir": trial.user_attrs.get("trial_dir", ""),
                                                  "retry_of": trial.number})


def interrupted_numbers(study) -> set[int]:
    return {t.user_attrs["retry_of"] for t in study.get_trials(deepcopy=False) if "retry_of" in t.user_attrs}


def counted_trials(study) -> int:
    """Finished trials that count towards --trials (interrupted ones are retried, not counted)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    interrupted = interrupted_numbers(study)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if t.number not in interrupted)


def _suggest(trial, key: str, spec: SweepSpec) -> Any:
    parameter = spec.parameters[key]
    if parameter.values is not None:
        return trial.suggest_categorical(key, parameter.values)
    if parameter.distribution == "int_uniform":
        return trial.suggest_int(key, int(parameter.min), int(parameter.max))
    return trial.suggest_float(key, parameter.min, parameter.max, log=parameter.distribution == "log_uniform_values")


def trial_overrides(spec: SweepSpec, params: dict[str, Any], trial_dir: Path) -> list[str]:
    """The train overrides of one trial: base, the trial's parameters, its own directories."""
    return (spec.base_overrides() + [override_text(k, v) for k, v in params.items()]
            + [override_text("training.output_dir", str(trial_dir / "run")),
               override_text("training.checkpoint_dir", str(trial_dir / "checkpoints"))])


class TrialFailed(Exception):
    """A trial's run failed (bad combination, NaN loss, no metric); the sweep goes on."""


def run_trial(study, spec: SweepSpec, study_dir: Path, faults: Faults = NO_FAULTS) -> TrialSummary:
    """One trial through Optuna's own loop (so samplers such as the grid can stop the study)."""
    import optuna

    outcome: dict[str, Any] = {}

    def objective(trial) -> float:
        return _train_trial(trial, spec, study_dir, outcome, faults)

    started = time.perf_counter()
    try:
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    except KeyboardInterrupt:
        _queue_retry(study, study.trials[-1])
        raise
    seconds = time.perf_counter() - started
    trial = study.trials[-1]
    state = trial.state.name
    if state == "PRUNED":
        note = f"pruned at step {outcome.get('pruned_at')}"
    else:
        note = trial.user_attrs.get("error", "")
    value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
    return TrialSummary(trial.number, state, dict(trial.params), value, seconds, note, outcome.get("trial_dir", ""))


def _train_trial(trial, spec: SweepSpec, study_dir: Path, outcome: dict[str, Any], faults: Faults) -> float:
    import optuna
    from rich.console import Console

    from peftstudio import api

    params = {key: _suggest(trial, key, spec) for key in spec.parameters}
    trial_dir = Path(trial.user_attrs.get("trial_dir") or study_dir / "trials" / f"trial-{trial.number:03d}")
    trial.set_user_attr("trial_dir", str(trial_dir))
    outcome["trial_dir"] = str(trial_dir)
    reporter = PruningReporter(trial, spec.metric.record_key)
    try:
        api.train(trial_overrides(spec, params, trial_dir), console=Console(quiet=True), callbacks=[reporter],
                  faults=faults)
    except (PeftStudioError, RuntimeError, ValueError) as error:
        message = str(error).splitlines()[0][:300]
        trial.set_user_attr("error", message)
        raise TrialFailed(message) from error
    if reporter.pruned_at is not None:
        outcome["pruned_at"] = reporter.pruned_at
        raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
    value = final_metric(trial_dir / "run", spec.metric.record_key)
    if value is None:
        message = f"{spec.metric.name} was never logged (no validation split?)"
        trial.set_user_attr("error", message)
        raise TrialFailed(message)
    return value


def final_metric(run_dir: Path, record_key: str) -> float | None:
    """The last logged value of `record_key` in a trial's run dir."""
    values = [r[record_key] for r in read_run(run_dir).metrics if record_key in r]
    return float(values[-1]) if values else None


def summaries(study) -> list[TrialSummary]:
    """Every trial of the study, as the results table shows it."""
    rows, interrupted = [], interrupted_numbers(study)
    for trial in study.get_trials(deepcopy=False):
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = "interrupted, retried" if trial.number in interrupted else trial.user_attrs.get("error", "")
        if "retry_of" in trial.user_attrs:
            note = f"retry of trial {trial.user_attrs['retry_of']}"
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            note = f"pruned at step {trial.last_step} ({trial.intermediate_values[trial.last_step]:.4g} then)"
        value = trial.value if trial.state.name == "COMPLETE" else None
        rows.append(TrialSummary(trial.number, trial.state.name, dict(trial.params), value, seconds, note,
                                 trial.user_attrs.get("trial_dir", "")))
    return rows


def run_sweep(path: Path, trials: int | None = None, study_dir: Path | None = None, console=None,
              on_trial=None, faults: Faults = NO_FAULTS) -> SweepOutcome:
    """Validate the sweep file, then run trials until the study holds `trials` finished ones;
    `faults` (injected by tests) go to every trial."""
    from peftstudio.sweep.results import write_results

    spec = load_sweep(Path(path))
    study_dir = Path(study_dir) if study_dir is not None else Path("sweeps") / Path(path).stem
    started = time.perf_counter()
    study = open_study(spec, study_dir, Path(path).stem)
    retry_interrupted(study)
    target = trials or (spec.grid_size() if spec.method == "grid" else DEFAULT_TRIALS)
    if spec.method == "grid":
        target = min(target, spec.grid_size())
    ran = 0
    while counted_trials(study) < target and not _grid_exhausted(study, spec):
        summary = run_trial(study, spec, study_dir, faults)
        ran += 1
        if on_trial is not None:
            on_trial(summary)
    rows = summaries(study)
    best = _best(rows, spec)
    outcome = SweepOutcome(spec, study_dir, rows, best, ran, time.perf_counter() - started)
    outcome.files = write_results(outcome)
    return outcome


def _grid_exhausted(study, spec: SweepSpec) -> bool:
    """Every grid combination already finished (as complete, pruned or failed, not interrupted)."""
    if spec.method != "grid":
        return False
    from optuna.trial import TrialState

    interrupted = interrupted_numbers(study)
    done = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and t.number not in interrupted}
    return len(done) >= spec.grid_size()


def _best(rows: list[TrialSummary], spec: SweepSpec) -> TrialSummary | None:
    complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    if not complete:
        return None
    pick = min if spec.metric.goal == "minimize" else max
    return pick(complete, key=lambda r: r.value)
