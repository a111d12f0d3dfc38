"""The RunPlan: everything decided about a run before any weight is loaded.

compose → validate → read and check the data → detect hardware → resolve `auto` → cross-field
checks → a frozen plan that `plan` prints, `train` executes and the run dir keeps as plan.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peftstudio.data.prepare import PreparedData, prepare_data
from peftstudio.data.tokenization import TokenizedData, padding_waste, percentiles
from peftstudio.config.compose import RANK_DEFAULT, Composition
from peftstudio.config.introspect import flatten
from peftstudio.config.schema import RunConfig
from peftstudio.config.validate import load_config
from peftstudio.errors import EnvironmentProblem, UserError
from peftstudio.plan.checks import check
from peftstudio.plan.fit import check_fit
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.resolve import resolve

PLAN_VERSION = 1


@dataclass(frozen=True)
class DataSummary:
    source: str
    format: str
    format_reason: str
    train_rows: int
    validation_rows: int
    sha256: str
    padding_waste: float
    split_reason: str = ""
    token_lengths: dict[str, int] = field(default_factory=dict)  # p50/p90/p99/max, before truncation
    tokens_measured: bool = True  # False: estimated from characters (tokenizer not available to plan)
    over_limit: int = 0
    overlong: str = "truncate"
    masked_dropped: int = 0
    chat_template: str = ""
    pad_token: str = ""
    mean_tokens: float = 0.0  # tokens per training row after truncation, for the time estimate


@dataclass(frozen=True)
class Schedule:
    mode: str  # "steps" or "epochs"
    reason: str
    optimizer_steps: int
    steps_per_epoch: int
    effective_batch: int


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    provenance: dict[str, str]
    hardware: HardwareProfile
    data: DataSummary
    schedule: Schedule
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""
    memory: dict[str, Any] | None = None  # FitReport.to_dict(): the estimate and what fits
    batch_size_search: dict[str, Any] | None = None  # BatchSizeResult.to_dict() when micro_batch_size=auto

    @property
    def identity(self) -> dict[str, Any]:
        return run_identity(self.config, self.data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "config": self.config.model_dump(mode="json"),
            "provenance": self.provenance,
            "hardware": self.hardware.to_dict(),
            "data": asdict(self.data),
            "schedule": asdict(self.schedule),
            "warnings": self.warnings,
            "fingerprint": self.fingerprint,
            "memory": self.memory,
            "batch_size_search": self.batch_size_search,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def make_plan(overrides: list[str] | None = None, config_file: Path | None = None,
              hardware: HardwareProfile | None = None) -> RunPlan:
    """Compose, validate, check the data, resolve against `hardware` (detected when None)."""
    return plan_with_data(overrides, config_file, hardware)[0]


def plan_with_data(overrides: list[str] | None = None, config_file: Path | None = None,
                   hardware: HardwareProfile | None = None,
                   require_tokenizer: bool = False) -> tuple[RunPlan, TokenizedData | None]:
    """`make_plan`, also returning the tokenized data so training does not read it twice.
    Without `require_tokenizer`, a tokenizer that cannot be had offline makes the token
    figures estimates (with a warning) instead of an error."""

    config, composition = load_config(overrides, config_file)
    data = prepare_data(config.data)
    if hardware is None:
        from peftstudio.plan.hardware import detect

        hardware = detect(config.training.output_dir)
    micro_batch = config.training.micro_batch_size
    if micro_batch == "auto":  # padding waste depends on the micro-batch: resolve it first
        micro_batch = resolve(config, hardware, None).config.training.micro_batch_size
    tokens, token_warnings = _tokenize(config, data, require_tokenizer, micro_batch)
    summary = _data_summary(config, data, tokens, micro_batch)
    resolution = resolve(config, hardware, summary.padding_waste)
    config = resolution.config
    schedule = _schedule(config, composition, summary.train_rows)
    findings = check(config, hardware, schedule.optimizer_steps, summary.validation_rows)
    if findings.errors:
        raise UserError(findings.errors + findings.environment, headline="the run cannot start")
    if findings.environment:
        raise EnvironmentProblem(findings.environment, headline="this environment cannot run it")
    fit = check_fit(config, hardware)
    provenance = _provenance(config, composition, resolution.reasons)
    plan = RunPlan(config, provenance, hardware, summary, schedule, token_warnings + findings.warnings + fit.warnings,
                   fingerprint(run_identity(config, summary)), fit.to_dict())
    return plan, tokens


def _tokenize(config: RunConfig, data: PreparedData, required: bool,
              micro_batch: int) -> tuple[TokenizedData | None, list[str]]:
    from peftstudio.data.tokenization import tokenize_data
    from peftstudio.data.tokenizer import prepare_tokenizer

    try:
        setup = prepare_tokenizer(config, data.format)
    except EnvironmentProblem as problem:
        if required:
            raise
        return None, [f"token figures are estimates (4 characters per token): {problem.problems[0].message}; "
                      "train loads the tokenizer and checks lengths, template, pad token and labels before training"]
    training = config.training
    tokens = tokenize_data(data, setup, training.max_seq_length, config.data.overlong, training.loss_on, micro_batch)
    return tokens, tokens.warnings


def _data_summary(config: RunConfig, data: PreparedData, tokens: TokenizedData | None, micro_batch: int) -> DataSummary:
    common = dict(source=data.source, format=data.format, format_reason=data.format_reason, sha256=data.sha256,
                  split_reason=data.split_reason, overlong=config.data.overlong)
    if tokens is None:
        lengths = [sum(len(str(value)) for value in row.values()) // 4 + 1 for row in data.train_rows]
        return DataSummary(**common, train_rows=len(data.train_rows), validation_rows=len(data.validation_rows),
                           padding_waste=round(padding_waste(lengths, micro_batch), 4),
                           token_lengths=percentiles(lengths), tokens_measured=False,
                           over_limit=sum(n > config.training.max_seq_length for n in lengths),
                           mean_tokens=_mean([min(n, config.training.max_seq_length) for n in lengths]))
    stats = tokens.stats
    return DataSummary(**common, train_rows=len(tokens.train), validation_rows=len(tokens.validation),
                       padding_waste=stats.padding_waste, token_lengths=stats.percentiles, over_limit=stats.over_limit,
                       masked_dropped=stats.masked_dropped, chat_template=tokens.setup.template_reason,
                       pad_token=tokens.setup.pad_reason, mean_tokens=round(stats.total_tokens / len(tokens.train), 1))


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def with_measured_micro_batch(plan: RunPlan, result) -> RunPlan:
    """The plan with the micro-batch find-batch-size measured (a `BatchSizeResult`), the
    accumulation that keeps the effective batch, and the schedule and memory recomputed."""
    from dataclasses import replace

    training = plan.config.training.model_copy(update={
        "micro_batch_size": result.micro_batch_size, "gradient_accumulation_steps": result.gradient_accumulation_steps})
    config = plan.config.model_copy(update={"training": training})
    schedule = plan.schedule
    steps_per_epoch = max(math.ceil(plan.data.train_rows / (result.micro_batch_size * training.num_processes))
                          // result.gradient_accumulation_steps, 1)
    steps = steps_per_epoch * training.num_epochs if schedule.mode == "epochs" else schedule.optimizer_steps
    probes = ", ".join(f"{p.micro_batch_size} {'ok' if p.fits else 'oom'}" for p in result.probes)
    provenance = {**plan.provenance,
                  "training.micro_batch_size": f"auto: measured by {len(result.probes)} probe(s) ({probes}) at sequence "
                                               f"{result.seq_len}, seeded by the estimate; limited by {result.limited_by}",
                  "training.gradient_accumulation_steps": f"auto: keeps the effective batch of {result.effective_batch}"}
    return replace(plan, config=config, provenance=provenance,
                   schedule=replace(schedule, optimizer_steps=steps, steps_per_epoch=steps_per_epoch,
                                    effective_batch=result.effective_batch * training.num_processes),
                   memory=check_fit(config, plan.hardware).to_dict(), batch_size_search=result.to_dict())


def _schedule(config: RunConfig, composition: Composition, train_rows: int) -> Schedule:
    training = config.training
    batches_per_epoch = math.ceil(train_rows / (training.micro_batch_size * training.num_processes))
    steps_per_epoch = max(batches_per_epoch // training.gradient_accumulation_steps, 1)
    effective = training.micro_batch_size * training.gradient_accumulation_steps * training.num_processes
    epochs_origin = composition.origin("training.num_epochs")
    batches_origin = composition.origin("training.num_batches")
    if epochs_origin.rank > max(batches_origin.rank, RANK_DEFAULT):
        return Schedule("epochs", f"training.num_epochs from {epochs_origin} outranks training.num_batches "
                        f"from {batches_origin}", steps_per_epoch * training.num_epochs, steps_per_epoch, effective)
    return Schedule("steps", f"training.num_batches from {batches_origin}", training.num_batches,
                    steps_per_epoch, effective)


def _provenance(config: RunConfig, composition: Composition, reasons: dict[str, str]) -> dict[str, str]:
    provenance = {}
    for key in flatten(config.model_dump()):
        provenance[key] = f"auto: {reasons[key]}" if key in reasons else str(composition.origin(key))
    return provenance


def run_identity(config: RunConfig, data: DataSummary) -> dict[str, Any]:
    """What makes a run the same run for resuming: the model, the data and the adapter method."""
    return {
        "model": [config.model.name_or_path, config.model.revision],
        "data": [data.sha256, data.format, config.data.model_dump(mode="json")],
        "method": config.peft.model_dump(mode="json"),
    }


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
