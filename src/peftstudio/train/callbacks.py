"""Trainer callbacks: metrics out, early stopping, and the progress a person watches."""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from peftstudio.rewards import higher_is_better
from peftstudio.track.metrics import MetricsSink
from peftstudio.train.checkpoints import TrainingProgress

log = logging.getLogger("peftstudio")


def _peak_memory() -> dict[str, int]:
    import torch

    if torch.cuda.is_available():
        return {"memory_allocated": torch.cuda.memory_allocated(), "memory_reserved": torch.cuda.memory_reserved(),
                "memory_peak": torch.cuda.max_memory_allocated()}
    if torch.backends.mps.is_available():  # Apple GPUs report what is allocated and held, no peak
        return {"memory_allocated": torch.mps.current_allocated_memory(),
                "memory_reserved": torch.mps.driver_allocated_memory()}
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return {"memory_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}


class MetricsCallback(TrainerCallback):
    """Turns the trainer's logs into peftstudio metric records and keeps `TrainingProgress`.

    It also aligns logging with checkpoints: a log line is forced at every save step, so the
    loss averaged over a log window is the same whether or not the run was resumed there.
    """

    def __init__(self, sinks: list[MetricsSink], progress: TrainingProgress, save_interval: int,
                 metric_for_best: str | None, patience: int | None, threshold: float,
                 generation_eval: Callable[..., dict[str, float | None]] | None = None):
        self.sinks = sinks
        # Generated answers scored by eval.metrics (train/generation.py), at every evaluation.
        self.generation_eval = generation_eval
        self.progress = progress
        self.save_interval = save_interval
        self.metric_for_best = metric_for_best
        self.patience = patience
        self.threshold = threshold
        self.window_tokens = 0
        self._window_start = time.perf_counter()
        self._window_steps = 0

    def count_tokens(self, tokens: int) -> None:
        self.window_tokens += tokens
        self.progress.tokens_seen += tokens

    def on_step_end(self, args, state, control, **kwargs):
        self._window_steps += 1
        final = state.global_step >= state.max_steps
        if state.global_step % self.save_interval == 0 or final:
            control.should_log = True
            control.should_save = True
        if self._watched_metric() and args.eval_strategy != "no" and state.global_step % args.eval_steps == 0:
            # An improving eval forces a checkpoint (see `_track_best`); its log line keeps the
            # loss windows aligned with checkpoints, as at every regular save.
            control.should_log = True
        if final and kwargs.get("eval_dataloader") is not None:
            control.should_evaluate = True
        return control

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        elapsed = time.perf_counter() - self._window_start
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs["loss"],
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_second": round(self.window_tokens / elapsed, 1) if elapsed > 0 else None,
            "step_time": round(elapsed / max(self._window_steps, 1), 4),
            "tokens_seen": self.progress.tokens_seen,
            **_peak_memory(),
            **objective_metrics(logs),
        }
        self._emit(record)
        self.window_tokens, self._window_steps, self._window_start = 0, 0, time.perf_counter()

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        perplexity = math.exp(loss) if loss < 50 else math.inf
        generated = {}
        if self.generation_eval is not None and kwargs.get("model") is not None:
            generated = self.generation_eval(kwargs["model"], kwargs.get("processing_class"), state.global_step)
            self._send_predictions(state.global_step, getattr(self.generation_eval, "last_rows", []))
        self._emit({"step": state.global_step, "eval_loss": loss, "eval_perplexity": perplexity,
                    **generated, **objective_metrics(metrics or {}, "eval_")})
        self._track_best(state.global_step, {"eval_loss": loss, "eval_perplexity": perplexity, **generated}, control)

    def _send_predictions(self, step: int, rows: list[dict]) -> None:
        """The evaluation's generations to the sinks that record them (Phoenix traces)."""
        for sink in self.sinks:
            if rows and hasattr(sink, "write_predictions"):
                sink.write_predictions(step, rows)

    def _watched_metric(self) -> str | None:
        return self.metric_for_best or ("eval_loss" if self.patience else None)

    def _track_best(self, step: int, metrics: dict[str, float], control) -> None:
        name = self._watched_metric()
        if name is None:
            return
        key = {"loss": "eval_loss", "perplexity": "eval_perplexity"}.get(name, name)
        if key not in metrics and "eval/" + key in metrics:
            key = "eval/" + key  # metric_for_best_model=exact_match names eval/exact_match
        value = metrics.get(key)
        if value is None:
            return  # a generated metric that applied to no row this time: no comparison
        best = self.progress.best_metric
        improved = value > best + self.threshold if higher_is_better(key) and best is not None else (
            best is None or value < best - self.threshold)
        if improved:
            self.progress.best_metric, self.progress.best_step = value, step
            self.progress.evaluations_without_improvement = 0
            # The best step must have a checkpoint to keep, even between save intervals.
            control.should_save = True
        else:
            self.progress.evaluations_without_improvement += 1
        if self.patience and self.progress.evaluations_without_improvement >= self.patience:
            control.should_training_stop = True
            control.should_save = True

    def _emit(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(TrainerCallback):
    """Dies with SIGKILL at the end of optimizer step `step` (fault injection for tests)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            kill_self()


class TermAtStep(TrainerCallback):
    """Sends itself SIGTERM at the end of optimizer step `step`, as a scheduler or `kill` would
    (fault injection for tests): the run stops through its real signal handling."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class InfWeightsAtStep(TrainerCallback):
    """Sets one adapter weight matrix to infinity before optimizer step `step` (fault injection
    for tests): the forward pass, the loss and every later update turn NaN, as in a real
    fp16 overflow."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 != self.step or model is None:
            return
        import torch

        name, weight = next((n, p) for n, p in model.named_parameters() if "lora_B" in n)
        with torch.no_grad():
            weight.fill_(math.inf)
        log.warning("fault injection: %s set to inf before step %d", name, self.step)


class ConsoleProgress(TrainerCallback):
    """A progress bar with the latest loss, and one printed line per log step."""

    def __init__(self, console, total_steps: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
                                 transient=True)
        self.task = self.progress.add_task("train", total=total_steps, status="")

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.start()
        self.progress.update(self.task, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            line = f"step {state.global_step:>5}/{state.max_steps}  loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}"
            self.progress.update(self.task, status=f"loss {logs['loss']:.4f}")
            self.console.print(line)
            log.info(line)
        elif "eval_loss" in logs:
            line = f"step {state.global_step:>5}/{state.max_steps}  eval loss {logs['eval_loss']:.4f}"
            self.console.print(line, style="cyan")
            log.info(line)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.stop()


# What the DPO / KTO / GRPO trainers log beside the loss, kept under TRL's names: rewards/chosen,
# rewards/rejected, rewards/margins, rewards/accuracies (DPO, KTO); reward, reward_std,
# rewards/<function>/mean and /std, kl, completions/mean_length, completions/clipped_ratio,
# clip_ratio/*, entropy (GRPO); nll_loss, log_odds_ratio, log_odds_chosen (ORPO). SFT logs none of
# them, so its records are unchanged.
OBJECTIVE_METRICS = ("rewards/", "logps/", "reward", "frac_reward_zero_std", "kl", "completions/", "clip_ratio/",
                     "nll_loss", "log_odds_")


def objective_metrics(logs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found = {key: value for key, value in logs.items() if key.removeprefix(prefix).startswith(OBJECTIVE_METRICS)}
    if found and prefix + "entropy" in logs:
        found[prefix + "entropy"] = logs[prefix + "entropy"]
    return found
