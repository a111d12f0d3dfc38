"""Execute a RunPlan: pick the checkpoint to resume, build model and data, train, and write
the run directory."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from peftstudio.config.introspect import flatten
from peftstudio.data.tokenization import TokenizedData
from peftstudio.errors import EnvironmentProblem, Interrupted, Problem
from peftstudio.plan.distributed_checks import SHARDED
from peftstudio.plan.runplan import RunPlan
from peftstudio.redact import scrub, scrub_tree, secrets_known
from peftstudio.settings import process_place
from peftstudio.track.metrics import JsonlSink, MetricsSink, TensorBoardSink, read_metrics, truncate_metrics
from peftstudio.files import replace_dir, write_json
from peftstudio.track.runs import RunDir
from peftstudio.train.checkpoints import (HISTORY_FILE, CheckpointDir, TrainingProgress, changed_settings, choose_resume,
                                          resume_target)
from peftstudio.train.distributed import check_replicas_agree, gather_trainable, is_main_process, main_process_first
from peftstudio.train.faults import NO_FAULTS, Faults
from peftstudio.train.watchdog import WatchdogStopped

log = logging.getLogger("peftstudio")
# The adapter as initialised, kept beside the checkpoints: saving converts a PiSSA / OLoRA
# adapter against it (see `_save_adapter`).
INITIAL_ADAPTER = "initial-adapter"
# The predictions table of each evaluation with eval.metrics: RUN_DIR/eval/step-N.jsonl.
EVAL_TABLES = "eval"


@dataclass(frozen=True)
class TrainResult:
    run_dir: RunDir
    resumed_from: Path | None
    final_step: int
    first_loss: float | None
    last_loss: float | None
    stopped_early: bool
    report: bool = True  # False in the workers of a multi-process run: their launcher reports


def run_training(plan: RunPlan, data: TokenizedData, console, callbacks: list | None = None,
                 faults: Faults = NO_FAULTS) -> TrainResult:
    """Train `plan` on `data` in this process (one worker of a multi-process run, or the only
    process); resumes from the newest complete checkpoint of the same run. `callbacks` are
    extra trainer callbacks (a sweep's pruning hook); `faults` are injected by tests."""
    if not is_main_process():
        console = Console(quiet=True)  # one voice: rank 0's
    training = plan.config.training
    run_dir, checkpoints = RunDir.at(training.output_dir), CheckpointDir.at(training.checkpoint_dir)
    with main_process_first(plan.config.device, training.process_timeout_s):
        resume_from = _start(plan, console, run_dir, checkpoints)
    if _already_finished(plan, run_dir, resume_from):
        return _finished_result(run_dir, resume_from)
    handler = _log_to_file(run_dir.log) if is_main_process() else None
    sinks: list[MetricsSink] = []
    try:
        settings = saved_settings(plan)
        progress = TrainingProgress.read(resume_from) if resume_from else TrainingProgress(
            fingerprint=plan.fingerprint, identity=plan.identity, settings=settings)
        if resume_from:
            log.info("resuming from %s at step %d", resume_from, progress.step)
            _warn_changed_settings(console, progress, settings)
        sinks = _open_sinks(plan, run_dir, progress.step if resume_from else None, console) if is_main_process() else []
        if plan.config.device == "cpu" and training.num_processes == 1:
            import torch

            torch.set_num_threads(training.cpu_threads)  # plan measured which count is faster here
        trainer = _build_trainer(plan, data, checkpoints, progress, sinks, console, callbacks or [], faults)
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except KeyboardInterrupt as interrupt:
            raise _stopped(interrupt, trainer.state.global_step, plan, checkpoints) from None
        except Exception as error:
            # In the run's log, so `peftstudio diagnose` can name it (out of memory, ...) later.
            log.error("run failed: %s: %s", type(error).__name__, error)
            raise
        _stop_if_watchdog_tripped(trainer, run_dir)
        check_replicas_agree(trainer)
        _save_adapter(trainer, plan, run_dir, checkpoints)
    finally:
        for sink in sinks:
            sink.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    return _result(plan, run_dir, resume_from, trainer)


# What a full disk looks like from inside torch.save and safetensors, besides ENOSPC itself.
_DISK_FULL_TEXT = ("No space left on device", "unexpected pos", "file write failed")


def out_of_disk(error: BaseException, plan: RunPlan) -> EnvironmentProblem | None:
    """A disk-full failure (anywhere in `error`'s chain) as an environment problem naming the
    path, the free space and what the run needs; None for any other failure."""
    import errno

    from peftstudio.plan.disk import checkpoint_disk_bytes
    from peftstudio.units import format_gib

    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = [e for e in chain if (isinstance(e, OSError) and e.errno == errno.ENOSPC)
            or any(text in str(e) for text in _DISK_FULL_TEXT)]
    if not full:
        return None
    filename = getattr(full[0], "filename", None)
    where = Path(filename) if filename else Path(plan.config.training.checkpoint_dir).expanduser()
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("."))
    sizes = checkpoint_disk_bytes(plan.config)
    needs = (f"about {format_gib(sizes[0], 2)} per checkpoint and up to {format_gib(sizes[1], 2)} in all"
             if sizes else "an unknown amount (no architecture numbers to estimate it)")
    return EnvironmentProblem(Problem(str(where), f"disk full while the run wrote here ({format_gib(shutil.disk_usage(existing).free, 2)} "
                                      f"free; its checkpoints need {needs})",
                                      "free disk space, lower training.save_total_limit, or move training.checkpoint_dir "
                                      "and training.output_dir to a larger disk; then rerun the same command to resume "
                                      "from the last complete checkpoint"))


def _stopped(interrupt: KeyboardInterrupt, step: int, plan: RunPlan, checkpoints: CheckpointDir) -> Interrupted:
    """Where a run stopped by SIGINT / SIGTERM is, and how it goes on."""
    signal_name = interrupt.args[0] if interrupt.args else "SIGINT"
    latest = checkpoints.latest()
    saved = (f"its newest checkpoint is {latest} (step {TrainingProgress.read(latest).step}): rerun the same "
             "command to resume from there" if latest else "no checkpoint was written yet: rerun the same command "
             "to start again")
    message = f"{signal_name} at step {step} of {plan.schedule.optimizer_steps}; {saved}"
    log.warning("run stopped: %s", message)
    return Interrupted(message, 143 if signal_name == "SIGTERM" else 130)


def _stop_if_watchdog_tripped(trainer, run_dir: RunDir) -> None:
    from peftstudio.train.watchdog import NanWatchdog

    watchdog = next((c for c in trainer.callback_handler.callbacks if isinstance(c, NanWatchdog)), None)
    if watchdog is None or not watchdog.tripped:
        return
    steps = watchdog.bad_steps
    if is_main_process():
        log.error("watchdog: loss NaN/inf for %d consecutive logs (steps %d-%d); run stopped", len(steps), steps[0], steps[-1])
    raise WatchdogStopped(steps, run_dir.root)


def _start(plan: RunPlan, console, run_dir: RunDir, checkpoints: CheckpointDir) -> Path | None:
    """Choose the checkpoint to resume from and prepare the run dir. Rank 0 does it (first);
    the other ranks only follow its choice."""
    training = plan.config.training
    if not is_main_process():
        return resume_target(checkpoints, training.resume, plan.fingerprint, plan.identity)
    resume_from = choose_resume(checkpoints, training.resume, plan.fingerprint, plan.identity,
                                report=lambda message: _warn(console, message))
    step = TrainingProgress.read(resume_from).step if resume_from else 0
    if _already_finished(plan, run_dir, resume_from):
        console.print(f"[bold]already finished[/] at step {step} ({resume_from}), with its adapter in "
                      f"{run_dir.adapter}: nothing to do. Raise training.num_batches to train further, or pass "
                      "training.resume=never to train again from scratch.")
        return resume_from
    _prepare_run_dir(plan, run_dir, resume_from, step)
    checkpoints.root.mkdir(parents=True, exist_ok=True)
    if resume_from and step >= plan.schedule.optimizer_steps:
        console.print(f"[bold]already complete[/] at step {step} ({resume_from}); rewriting the outputs. "
                      "Pass training.resume=never to train again from scratch.")
    elif resume_from:
        console.print(f"[bold]resuming[/] from {resume_from} (step {step})")
    return resume_from


def _warn(console, message: str) -> None:
    console.print(f"[yellow]warning[/]   {message}", markup=True, highlight=False)
    log.warning("%s", message)


def _already_finished(plan: RunPlan, run_dir: RunDir, resume_from: Path | None) -> bool:
    """The newest checkpoint is at (or past) the planned last step and the run's outputs are
    there: a rerun of a finished run has nothing to do. A longer run (training.num_batches
    raised) or missing outputs (the output dir deleted) are not finished."""
    if resume_from is None or not (run_dir.adapter.is_dir() and run_dir.summary.is_file()):
        return False
    return TrainingProgress.read(resume_from).step >= plan.schedule.optimizer_steps


def _finished_result(run_dir: RunDir, resume_from: Path) -> TrainResult:
    import json

    summary = json.loads(run_dir.summary.read_text(encoding="utf-8"))
    return TrainResult(run_dir, resume_from, summary["final_step"], summary.get("first_loss"),
                       summary.get("last_loss"), bool(summary.get("stopped_early")),
                       report=is_main_process() and not process_place().launched)


def _warn_changed_settings(console, progress: TrainingProgress, settings: dict) -> None:
    changes = [scrub(change) for change in changed_settings(progress.settings, settings)]  # older states held values
    if changes:
        console.print("[yellow]warning[/]   resuming with settings changed since the checkpoint (the result will "
                      "match an uninterrupted run of neither config): " + "; ".join(changes), markup=True)
        log.warning("resuming with changed settings: %s", "; ".join(changes))
    progress.settings = settings


def _prepare_run_dir(plan: RunPlan, run_dir: RunDir, resume_from: Path | None, step: int) -> None:
    run_dir.write_plan(plan.to_json(), plan.config.model_dump(mode="json"))
    run_dir.summary.unlink(missing_ok=True)  # rewritten when this run ends
    if resume_from:
        kept = resume_from / HISTORY_FILE
        if not run_dir.metrics.is_file() and kept.is_file():
            # The output dir was deleted or replaced: the history up to the checkpoint travels with it.
            shutil.copyfile(kept, run_dir.metrics)
        truncate_metrics(run_dir.metrics, step)
        return
    run_dir.metrics.unlink(missing_ok=True)
    shutil.rmtree(run_dir.tensorboard, ignore_errors=True)
    shutil.rmtree(run_dir.root / EVAL_TABLES, ignore_errors=True)
    for tracker_id in ("wandb_run_id", "mlflow_run_id"):  # a fresh start is a new tracker run
        (run_dir.root / tracker_id).unlink(missing_ok=True)


def saved_settings(plan: RunPlan) -> dict:
    """The resolved config, flattened, as checkpoints and trackers keep it: no secrets (redact.py)."""
    return scrub_tree(flatten(plan.config.model_dump(mode="json")))


class _ScrubSecrets(logging.Filter):
    """Every log record as it would be shown: secrets replaced (redact.scrub)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    if secrets_known():
        path.chmod(0o600)
    handler.addFilter(_ScrubSecrets())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _open_sinks(plan: RunPlan, run_dir: RunDir, resumed_step: int | None, console) -> list[MetricsSink]:
    """metrics.jsonl always, then each tracker `logging` switches on (hyperparameters once)."""
    sinks: list[MetricsSink] = [JsonlSink(run_dir.metrics)]
    if plan.config.logging.tensorboard:
        purge = resumed_step + 1 if resumed_step is not None else None
        sinks.append(TensorBoardSink(run_dir.tensorboard, purge_step=purge))
    from peftstudio.track.trackers import GuardedSink

    def warn(message: str) -> None:
        log.warning("%s", message)
        console.print(f"[yellow]warning[/]   {message}", highlight=False, markup=True)

    for name, build in _tracker_factories(plan, run_dir, resumed_step is not None).items():
        sinks.append(GuardedSink(name, build, warn, build_here=name == "W&B"))
    return sinks


def _tracker_factories(plan: RunPlan, run_dir: RunDir, resumed: bool) -> dict:
    """Tracker name → what opens its sink, for each tracker `logging` switches on (each
    tracker's library imported only when it is used)."""
    logging_settings, factories = plan.config.logging, {}
    identity = {"name": logging_settings.run_name or f"{plan.config.peft.method}-{plan.fingerprint[:8]}",
                "tags": list(logging_settings.tags), "notes": logging_settings.notes}
    project, settings = logging_settings.project, saved_settings(plan)
    if logging_settings.wandb:
        from peftstudio.track.trackers import WandbSink

        factories["W&B"] = lambda: WandbSink(run_dir.root, project or logging_settings.wandb_project, identity,
                                             settings, resumed)
    if logging_settings.mlflow and not _skipped("logging.mlflow", plan):
        from peftstudio.track.trackers import MlflowSink

        factories["MLflow"] = lambda: MlflowSink(run_dir.root, logging_settings.mlflow_tracking_uri,
                                                 project or logging_settings.mlflow_experiment, identity, settings, resumed)
    if logging_settings.comet:
        from peftstudio.track.comet import CometSink

        factories["Comet"] = lambda: CometSink(run_dir.root, project or "peftstudio", identity, settings, resumed)
    if logging_settings.phoenix:
        from peftstudio.track.phoenix import PhoenixSink

        factories["Phoenix"] = lambda: PhoenixSink(logging_settings.phoenix_endpoint, project or "peftstudio", identity)
    if logging_settings.trackio:
        from peftstudio.track.trackio_sink import TrackioSink, trackio_store

        directory = trackio_store(logging_settings.trackio_dir, run_dir.root)[0]
        factories["Trackio"] = lambda: TrackioSink(directory, project or "peftstudio", identity, settings, resumed)
    return factories


def _skipped(tracker_key: str, plan: RunPlan) -> bool:
    """A tracker plan found unreachable under logging.on_error=warn: the run goes on without it."""
    return any(warning.startswith(f"{tracker_key}: ") and "training goes on without it" in warning
               for warning in plan.warnings)


def _build_trainer(plan: RunPlan, data: TokenizedData, checkpoints: CheckpointDir, progress: TrainingProgress,
                   sinks: list[MetricsSink], console, extra_callbacks: list, faults: Faults):
    from datasets import Dataset

    from peftstudio.model.fast_paths import apply_fast_paths, attention_implementation
    from peftstudio.model.load import (attach_adapter, load_base_model, load_init_adapter, match_vocabulary,
                                        model_location, needs_conversion, quantization_config)
    from peftstudio.plan.resolve import cpu_fast_paths
    from transformers import PrinterCallback

    from peftstudio.train.callbacks import ConsoleProgress, MetricsCallback
    from peftstudio.train.trainer import CheckpointingSFTTrainer, sft_config
    from peftstudio.train.watchdog import NanWatchdog

    config, training = plan.config, plan.config.training
    location = model_location(config.model)
    tokenizer = data.setup.tokenizer  # the one plan measured with: template set, pad token fixed
    image_text = getattr(data, "image_stats", None) is not None
    quantization = quantization_config(config.peft, sharded=training.distributed in ("fsdp", "deepspeed_zero3"))
    if image_text:
        from peftstudio.model.vision import keep_vision_unquantized

        quantization = keep_vision_unquantized(quantization)
    fast_paths = cpu_fast_paths(config, plan.hardware)  # `plan` lists them on its kernels lines
    base = load_base_model(location, config.model, training.precision,
                           attention_implementation(fast_paths, training.attention), quantization, config.device,
                           image_text=image_text)
    match_vocabulary(base, tokenizer)
    if image_text:
        from peftstudio.model.vision import attach_image_text_adapter

        model = attach_image_text_adapter(base, config.peft, config.seed, training.gradient_checkpointing == "on")
    elif config.peft.init_adapter is not None:  # an earlier run's adapter, e.g. SFT before GRPO
        from peftstudio.plan.init_adapter import adapter_dir

        model = load_init_adapter(base, config.peft, adapter_dir(config.peft.init_adapter), config.seed,
                                  training.gradient_checkpointing == "on")
    else:
        model = attach_adapter(base, config.peft, config.seed, training.gradient_checkpointing == "on", location,
                               train_embeddings=bool(data.setup.added_tokens))
    apply_fast_paths(model, fast_paths)
    if needs_conversion(config.peft) and is_main_process():
        _keep_initial_adapter(model, checkpoints.root / INITIAL_ADAPTER, fresh_start=progress.step == 0)
    metrics = MetricsCallback(sinks, progress, training.save_interval_steps, training.metric_for_best_model,
                              training.early_stopping_patience, training.early_stopping_threshold,
                              _generation_evaluator(plan, data))
    callbacks = [metrics, ConsoleProgress(console, plan.schedule.optimizer_steps), *extra_callbacks]
    if training.nan_patience is not None:
        callbacks.append(NanWatchdog(training.nan_patience))
    callbacks += faults.callbacks()
    if config.logging.watch != "off":
        from peftstudio.train.watch import WatchCallback

        callbacks.append(WatchCallback(sinks, RunDir.at(training.output_dir).root / "histograms.jsonl", config.logging.watch,
                                       training.log_interval_steps))
    if config.objective != "sft":  # dpo / kto / grpo: train/objectives.py
        from peftstudio.train.objectives import objective_trainer

        trainer = objective_trainer(plan, model, tokenizer, data.prepared.train_rows, data.prepared.validation_rows,
                                    checkpoints.root, callbacks=callbacks, checkpoints=checkpoints, metrics=metrics,
                                    save_total_limit=training.save_total_limit, faults=faults,
                                    history=RunDir.at(training.output_dir).metrics,
                                    fsdp_on_cpu=training.distributed == "fsdp" and config.device == "cpu")
        trainer.remove_callback(PrinterCallback)
        return trainer
    validation = Dataset.from_dict(data.as_columns(data.validation)) if data.validation else None
    args = sft_config(plan, checkpoints.root, validation is not None)
    collator = None
    if image_text:  # the collator loads each batch's images; its image_refs column must reach it
        from peftstudio.train.vision_collator import ImageTextCollator

        args.remove_unused_columns = False
        collator = ImageTextCollator(data.setup.image_processor(), tokenizer.pad_token_id, config.data.image_grid)
    trainer = CheckpointingSFTTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=Dataset.from_dict(data.as_columns(data.train)),
        eval_dataset=validation,
        processing_class=tokenizer,
        callbacks=callbacks,
        checkpoints=checkpoints,
        metrics=metrics,
        history=RunDir.at(training.output_dir).metrics,
        save_total_limit=training.save_total_limit,
        faults=faults,
        loss_impl=training.loss_impl,
        fsdp_on_cpu=training.distributed == "fsdp" and config.device == "cpu",
    )
    trainer.remove_callback(PrinterCallback)  # ConsoleProgress prints the log lines
    return trainer


def _generation_evaluator(plan: RunPlan, data: TokenizedData):
    """The eval.metrics scorer of generated answers, or None when eval.metrics is empty (plan
    refuses it without validation rows that have answers, or with another objective than sft)."""
    config = plan.config
    if not config.eval.metrics or not data.prepared.validation_rows:
        return None
    from peftstudio.data.eval_examples import eval_examples
    from peftstudio.train.generation import GenerationEvaluator

    examples = eval_examples(data.prepared.validation_rows, config.eval.generate_samples)
    table_dir = RunDir.at(config.training.output_dir).root / EVAL_TABLES if is_main_process() else None
    return GenerationEvaluator(config.eval, examples, config.seed, table_dir)


def _keep_initial_adapter(model, path: Path, fresh_start: bool) -> None:
    """Save a PiSSA / OLoRA adapter as initialised, once: the final save converts against it so
    the adapter applies to the original base weights, not the residual ones it trained on."""
    if path.is_dir() and not fresh_start:
        return  # a resumed run converts against the initial adapter of its first start
    staged = path.with_name(path.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    init = model.peft_config["default"].init_lora_weights
    model.peft_config["default"].init_lora_weights = True  # loading the initial adapter must not re-run the SVD / QR
    model.save_pretrained(staged)
    model.peft_config["default"].init_lora_weights = init
    replace_dir(staged, path)


def _save_adapter(trainer, plan: RunPlan, run_dir: RunDir, checkpoints: CheckpointDir) -> None:
    staged = run_dir.root / ".adapter.tmp"
    distributed = plan.config.training.distributed
    if distributed == "fsdp":
        full_state = gather_trainable(trainer.model)
    elif distributed in SHARDED:
        trainer.save_model(str(staged))
    if not is_main_process():
        return
    if distributed not in SHARDED:
        shutil.rmtree(staged, ignore_errors=True)
        _save_full_adapter(trainer.model, plan, staged, checkpoints)
    elif distributed == "fsdp":
        shutil.rmtree(staged, ignore_errors=True)
        _save_full_adapter(trainer.model, plan, staged, checkpoints, full_state)
    trainer.processing_class.save_pretrained(staged)
    replace_dir(staged, run_dir.adapter)


def _save_full_adapter(model, plan: RunPlan, staged: Path, checkpoints: CheckpointDir, state_dict=None) -> None:
    from peftstudio.model.load import needs_conversion

    gathered = {} if state_dict is None else {"state_dict": state_dict}
    if needs_conversion(plan.config.peft):
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(staged, path_initial_model_for_weight_conversion=str(checkpoints.root / INITIAL_ADAPTER),
                              **gathered)
    else:
        # Only the trained adapter: with peft.init_adapter, TRL's frozen "ref" copy sits beside it.
        model.save_pretrained(staged, selected_adapters=["default"], **gathered)


def _write_summary(run_dir: RunDir, trainer, stopped_early: bool, losses: list[float]) -> None:
    """How the run ended, for people and scripts: the best checkpoint is named here too."""
    progress = trainer.metrics.progress
    best = trainer.checkpoints.root / f"checkpoint-{progress.best_step}" if progress.best_step is not None else None
    summary = {
        "final_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "stopped_early": stopped_early,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "metric_for_best_model": trainer.metrics.metric_for_best,
        "best_metric": progress.best_metric,
        "best_step": progress.best_step,
        "best_checkpoint": str(best) if best is not None and best.is_dir() else None,
        "tokens_seen": progress.tokens_seen,
    }
    write_json(run_dir.summary, summary)


def _result(plan: RunPlan, run_dir: RunDir, resume_from: Path | None, trainer) -> TrainResult:
    from peftstudio.track.plots import plot_loss, plot_objective

    stopped = trainer.state.global_step < trainer.state.max_steps
    if not is_main_process():
        return TrainResult(run_dir, resume_from, trainer.state.global_step, None, None, stopped, report=False)
    records = read_metrics(run_dir.metrics)
    plot_loss(records, run_dir.loss_plot, f"{plan.config.model.name_or_path} · {plan.config.peft.method}")
    plot_objective(records, run_dir.root / "rewards.png", f"{plan.config.objective} · {plan.config.peft.method}")
    losses = [r["loss"] for r in records if "loss" in r]
    _write_summary(run_dir, trainer, stopped, losses)
    return TrainResult(run_dir, resume_from, trainer.state.global_step, losses[0] if losses else None,
                       losses[-1] if losses else None, stopped, report=not process_place().launched)
