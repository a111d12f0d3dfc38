"""Planning: compose → validate → read and check the data → detect hardware → resolve `auto`
→ cross-field checks → a RunPlan (plan/runplan.py).

`make_plan` raises the first stage's problems (all of that stage's at once); `survey` runs
every stage it can and collects the problems of each (what `doctor` shows). `execution_data`
is the other direction: a saved plan, checked against the machine and the data it now meets,
and the tokenized data to train on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from peftstudio.config.compose import (RANK_AUTO, RANK_DEFAULT, RANK_EXPERIMENT, RANK_GROUP, RANK_OVERRIDE,
                                       RANK_USER_FILE, Composition)
from peftstudio.config.introspect import flatten
from peftstudio.config.model_source import TOKENIZER_FILES, local_model_problem, missing_model_files
from peftstudio.config.schema import EMBEDDED_MODEL_ID, RunConfig
from peftstudio.config.validate import load_config
from peftstudio.data.prepare import PreparedData, prepare_data
from peftstudio.data.tokenization import TokenizedData, padding_waste, percentiles
from peftstudio.errors import EnvironmentProblem, Problem, UserError
from peftstudio.plan.checks import Findings, check
from peftstudio.plan.distributed_checks import launcher_mismatch
from peftstudio.plan.fit import check_fit
from peftstudio.plan.hardware import HardwareProfile, detect
from peftstudio.plan.evaluation import eval_data_problems
from peftstudio.plan.objectives import data_arguments, measure_objective_data
from peftstudio.plan.platforms import compose_for_platform
from peftstudio.plan.resolve import resolve
from peftstudio.plan.vision_memory import (estimated_lengths, refuse_unreadable_images, with_data_modality,
                                           without_image_packing)
from peftstudio.plan.runplan import (DataSummary, Decision, OriginKind, RunPlan, Schedule, decisions_of, fingerprint,
                                     run_identity)
from peftstudio.settings import ProcessPlace

ORIGIN_KINDS: dict[int, OriginKind] = {RANK_DEFAULT: "default", RANK_GROUP: "group", RANK_EXPERIMENT: "experiment",
                                       RANK_USER_FILE: "file", RANK_OVERRIDE: "override", RANK_AUTO: "auto"}
# Files one of which every tokenizer transformers loads from a directory has.
# What a plan depends on in the machine it was made for: resolution reads these, so a plan made
# on other hardware would not be the plan this machine gets.
HARDWARE_KEYS = ("accelerator", "device_count", "device_names", "device_memory_bytes", "compute_capability", "gpu_bf16",
                 "cpu_bf16", "flash_attention_available", "bitsandbytes_available")


def make_plan(overrides: list[str] | None = None, config_file: Path | None = None,
              hardware: HardwareProfile | None = None, place: ProcessPlace = ProcessPlace()) -> RunPlan:
    """Compose, validate, check the data, resolve against `hardware` (detected when None), for
    a process at `place` (by default one not started by a launcher)."""
    return plan_with_data(overrides, config_file, hardware, place=place)[0]


def plan_with_data(overrides: list[str] | None = None, config_file: Path | None = None,
                   hardware: HardwareProfile | None = None,
                   require_tokenizer: bool = False,
                   place: ProcessPlace = ProcessPlace()) -> tuple[RunPlan, TokenizedData | None]:
    """`make_plan`, also returning the tokenized data so training does not read it twice.
    Without `require_tokenizer`, a tokenizer that cannot be had offline makes the token
    figures estimates (with a warning) instead of an error."""
    requested, composition = load_config(overrides, config_file)
    if (problem := local_model_problem(requested.model.name_or_path)) is not None:
        raise UserError(problem)  # before the data is read or a tokenizer loader fails on it
    data = prepare_data(requested.data, *data_arguments(requested))
    hardware = hardware or detect(requested.training.output_dir)
    composed, composition = compose_for_platform(requested, composition, overrides, config_file, hardware)
    tokens, token_warnings = _tokenize(composed, data, hardware, require_tokenizer)
    summary = _data_summary(composed, data, tokens, hardware)
    resolution = without_image_packing(_resolve_with_data(composed, hardware, summary), summary)
    schedule = _schedule(resolution.config, composition, summary.train_rows)
    resolution = per_epoch_cadence(resolution, schedule)
    findings = check(resolution.config, hardware, schedule.optimizer_steps, summary.validation_rows, place)
    findings.errors += eval_data_problems(resolution.config, data)
    _raise(findings)
    return _assemble(requested, composition, resolution, hardware, summary, schedule,
                     token_warnings + findings.warnings), tokens


def _assemble(requested: RunConfig, composition: Composition, resolution, hardware: HardwareProfile,
              summary: DataSummary, schedule: Schedule, warnings: list[str]) -> RunPlan:
    config = resolution.config
    fit = check_fit(config, hardware)
    origins = {key: (ORIGIN_KINDS[composition.origin(key).rank], str(composition.origin(key)))
               for key in flatten(config.model_dump(mode="json"))}
    origins.update({key: ("auto", reason) for key, reason in resolution.reasons.items()})
    return RunPlan(requested, config, decisions_of(config, origins), hardware, summary, schedule,
                   warnings + fit.warnings, fingerprint(run_identity(config, summary)), fit.to_dict())


def _resolve_with_data(config: RunConfig, hardware: HardwareProfile, summary: DataSummary):
    """`resolve` with what the data says: its padding waste, and data.modality=auto set to what
    the rows hold before anything estimates memory (plan/vision_memory.py: with_data_modality)."""
    config, modality_reason = with_data_modality(config, summary)
    resolution = resolve(config, hardware, summary.padding_waste)
    if modality_reason is None:
        return resolution
    return replace(resolution, reasons={**resolution.reasons, "data.modality": modality_reason})


def _raise(findings: Findings) -> None:
    if findings.errors:
        raise UserError(findings.errors + findings.environment, headline="the run cannot start")
    if findings.environment:
        raise EnvironmentProblem(findings.environment, headline="this environment cannot run it")


def _planned_micro_batch(config: RunConfig, hardware: HardwareProfile) -> int:
    """The micro-batch padding waste is measured at: `auto` resolved first when it is auto."""
    micro_batch = config.training.micro_batch_size
    return resolve(config, hardware, None).config.training.micro_batch_size if micro_batch == "auto" else micro_batch


def _tokenize(config: RunConfig, data: PreparedData, hardware: HardwareProfile,
              required: bool) -> tuple[TokenizedData | None, list[str]]:
    from peftstudio.data.tokenization import Masking, tokenize_data
    from peftstudio.data.tokenizer import prepare_tokenizer

    refuse_unreadable_images(config, data)  # before any tokenizer loads (plan/vision_memory.py)
    if required:
        require_tokenizer_files(config, "training")
    missing = missing_tokenizer(config)
    if missing:
        return None, [f"token figures are estimates (4 characters per token): {missing}; train needs the tokenizer "
                      "and checks lengths, template, pad token and labels with it before training"]
    try:
        setup = prepare_tokenizer(config, data.format)
    except EnvironmentProblem as problem:
        if required:
            raise
        return None, [f"token figures are estimates (4 characters per token): {problem.problems[0].message}; "
                      "train loads the tokenizer and checks lengths, template, pad token and labels before training"]
    training = config.training
    if config.objective != "sft":
        return measure_objective_data(config, data, setup, _planned_micro_batch(config, hardware))
    tokens = tokenize_data(data, setup, training.max_seq_length, config.data.overlong, Masking.of(config),
                           _planned_micro_batch(config, hardware))
    return tokens, tokens.warnings


def require_tokenizer_files(config: RunConfig, purpose: str) -> None:
    """A user error (before any loading) when a local model directory has no tokenizer files."""
    missing = missing_tokenizer(config)
    if missing:
        raise UserError(Problem("model.name_or_path", f"{missing}: {purpose} needs the tokenizer",
                                "copy the model's tokenizer files into that directory"))


def missing_tokenizer(config: RunConfig) -> str | None:
    """Why a local model directory's tokenizer cannot load, decided from its files (None: it
    has tokenizer files, or the model is not a local directory). A directory with neither a
    config.json nor a tokenizer is not a model directory: a user error."""
    directory = Path(config.model.name_or_path).expanduser()
    if config.model.name_or_path == EMBEDDED_MODEL_ID or not directory.is_dir():
        return None
    missing = missing_model_files(directory)
    if not missing:
        return None
    if "config.json" in missing:
        raise UserError(local_model_problem(str(directory)))
    return f"{directory} has a config.json but no tokenizer files ({', '.join(TOKENIZER_FILES)})"


def _data_summary(config: RunConfig, data: PreparedData, tokens: TokenizedData | None,
                  hardware: HardwareProfile) -> DataSummary:
    from peftstudio.plan.vision_memory import modality_of

    common = dict(source=data.source, format=data.format, format_reason=data.format_reason, sha256=data.sha256,
                  split_reason=data.split_reason, overlong=config.data.overlong,
                  **modality_of(config, data, tokens.image_stats if tokens is not None else None))
    if tokens is None:
        micro_batch = _planned_micro_batch(config, hardware)
        lengths = estimated_lengths(config, data)  # text at 4 characters per token, plus image tokens
        return DataSummary(**common, train_rows=len(data.train_rows), validation_rows=len(data.validation_rows),
                           padding_waste=round(padding_waste(lengths, micro_batch), 4),
                           token_lengths=percentiles(lengths), tokens_measured=False,
                           over_limit=sum(n > config.training.max_seq_length for n in lengths),
                           mean_tokens=_mean([min(n, config.training.max_seq_length) for n in lengths]))
    stats = tokens.stats
    return DataSummary(**common, train_rows=len(tokens.train), validation_rows=len(tokens.validation),
                       padding_waste=stats.padding_waste, token_lengths=stats.percentiles, over_limit=stats.over_limit,
                       masked_dropped=stats.masked_dropped, chat_template=tokens.setup.template_reason,
                       pad_token=tokens.setup.pad_reason, answer_spans=tokens.setup.chat.reason,
                       added_tokens=list(tokens.setup.added_tokens), mean_tokens=round(stats.total_tokens / len(tokens.train), 1))


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 1) if values else 0.0


def with_measured_micro_batch(plan: RunPlan, result) -> RunPlan:
    """The plan with the micro-batch find-batch-size measured (a `BatchSizeResult`), the
    accumulation that keeps the effective batch, and the schedule and memory recomputed."""
    training = plan.config.training.model_copy(update={
        "micro_batch_size": result.micro_batch_size, "gradient_accumulation_steps": result.gradient_accumulation_steps})
    config = plan.config.model_copy(update={"training": training})
    schedule = plan.schedule
    steps_per_epoch = max(math.ceil(plan.data.train_rows / (result.micro_batch_size * training.num_processes))
                          // result.gradient_accumulation_steps, 1)
    steps = steps_per_epoch * training.num_epochs if schedule.mode == "epochs" else schedule.optimizer_steps
    probes = ", ".join(f"{p.micro_batch_size} {'ok' if p.fits else 'oom'}" for p in result.probes)
    decisions = {**plan.decisions,
                 "training.micro_batch_size": Decision(
                     result.micro_batch_size, "measured", f"{len(result.probes)} probe(s) ({probes}) at sequence "
                     f"{result.seq_len}, seeded by the estimate; limited by {result.limited_by}"),
                 "training.gradient_accumulation_steps": Decision(
                     result.gradient_accumulation_steps, "measured", f"keeps the effective batch of {result.effective_batch}")}
    return replace(plan, config=config, decisions=decisions,
                   schedule=replace(schedule, optimizer_steps=steps, steps_per_epoch=steps_per_epoch,
                                    effective_batch=result.effective_batch * training.num_processes),
                   memory=check_fit(config, plan.hardware).to_dict(), batch_size_search=result.to_dict())


def per_epoch_cadence(resolution, schedule: Schedule):
    """training.evals_per_epoch / saves_per_epoch → whole-step intervals from the steps per
    epoch, each with its reason (what Axolotl's evals_per_epoch / saves_per_epoch mean)."""
    training = resolution.config.training
    update, reasons = {}, {}
    for per_epoch, interval in (("evals_per_epoch", "eval_interval_steps"), ("saves_per_epoch", "save_interval_steps")):
        count = getattr(training, per_epoch)
        if count is None:
            continue
        update[interval] = max(schedule.steps_per_epoch // count, 1)
        reasons[f"training.{interval}"] = (f"training.{per_epoch}={count}: {schedule.steps_per_epoch} steps per epoch "
                                           f"/ {count} = every {update[interval]} step(s)")
    if not update:
        return resolution
    config = resolution.config.model_copy(update={"training": training.model_copy(update=update)})
    return replace(resolution, config=config, reasons={**resolution.reasons, **reasons})


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


@dataclass
class Survey:
    """What each planning stage found, every stage that could run having run: `requested` and
    `config` are None when the config itself is invalid, `data` when the data cannot be read."""

    hardware: HardwareProfile | None = None
    requested: RunConfig | None = None
    config: RunConfig | None = None
    data: PreparedData | None = None
    schedule: Schedule | None = None
    config_problems: list[Problem] = field(default_factory=list)
    data_problems: list[Problem] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)


def survey(overrides: list[str] | None = None, config_file: Path | None = None,
           hardware: HardwareProfile | None = None, place: ProcessPlace = ProcessPlace()) -> Survey:
    """The planning pipeline in collect-all-problems mode: each stage's problems are kept and
    the stages after it run on what is known (a run whose data cannot be read is still
    resolved and checked, its schedule then from training.num_batches)."""
    found = Survey()
    try:
        found.requested, composition = load_config(overrides, config_file)
    except UserError as error:
        found.config_problems = error.problems
        found.hardware = hardware or detect(".")
        return found
    # Free disk is measured where the checkpoints go: they are what fills it.
    found.hardware = hardware or detect(found.requested.training.checkpoint_dir)
    composed, composition = compose_for_platform(found.requested, composition, overrides, config_file, found.hardware)
    summary = None
    try:
        found.data = prepare_data(composed.data, *data_arguments(composed))
        tokens, _ = _tokenize(composed, found.data, found.hardware, required=False)
        summary = _data_summary(composed, found.data, tokens, found.hardware)
    except UserError as error:
        found.data_problems = error.problems
    resolution = _resolve_with_data(composed, found.hardware, summary) if summary else resolve(composed, found.hardware, None)
    found.config = resolution.config
    train_rows = summary.train_rows if summary else 0
    found.schedule = _schedule(found.config, composition, train_rows) if summary else Schedule(
        "steps", "data not readable: training.num_batches", found.config.training.num_batches, 1, 1)
    found.findings = check(found.config, found.hardware, found.schedule.optimizer_steps,
                           summary.validation_rows if summary else 0, place)
    if found.data is not None:
        found.findings.errors += eval_data_problems(found.config, found.data)
    return found


def execution_data(plan: RunPlan, hardware: HardwareProfile, source: str = "plan",
                   place: ProcessPlace = ProcessPlace()) -> TokenizedData:
    """Check a saved plan against the machine and the data it is about to run on, then read
    and tokenize the data exactly as planned. Other hardware or changed data is a user error
    naming what changed: the plan's decisions were made for what it recorded."""
    changes = [f"{key}: planned {getattr(plan.hardware, key)!r}, here {getattr(hardware, key)!r}"
               for key in HARDWARE_KEYS if getattr(plan.hardware, key) != getattr(hardware, key)]
    if changes:
        raise UserError(Problem(source, "made for other hardware: " + "; ".join(changes),
                                "plan the run on this machine (peftstudio plan OVERRIDES --out plan.json)"))
    mismatch = launcher_mismatch(plan.config.training, place)
    if mismatch:
        raise UserError(mismatch, headline=f"{source} cannot run under this launcher")
    config = plan.config
    data = prepare_data(config.data, *data_arguments(config))
    if data.sha256 != plan.data.sha256:
        raise UserError(Problem(source, f"the data changed since it was planned: {data.source} now hashes "
                                        f"{data.sha256[:12]}, the plan recorded {plan.data.sha256[:12]}",
                                "plan the run again on the data as it is now"))
    return _tokenize(config, data, hardware, required=True)[0]
