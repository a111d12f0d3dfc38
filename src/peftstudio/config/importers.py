"""`peftstudio import`: turn a foreign training config into a peftstudio YAML.

Three shapes are recognised: an HF `TrainingArguments` / TRL `SFTConfig` JSON (what
`args.to_json_string()` writes), an Axolotl YAML, and a wizard JSON such as
`{"algorithm": "qlora", "rank": 8, ...}`. Each source key either maps to peftstudio keys or is
listed as not mapped with the reason — printed and kept as comments in the YAML — so nothing
is dropped silently. The result is validated exactly as `peftstudio validate` validates a file;
a value the schema rejects is moved to the not-mapped list with the schema's message.
"""

from __future__ import annotations

import json
import math
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from peftstudio.errors import Problem, UserError
from peftstudio.redact import REDACTED, is_secret_name

Mapped = list[tuple[str, Any]]  # (dotted peftstudio key, value) pairs one source key becomes
Rule = Callable[[Any, dict[str, Any]], Mapped]
_UNSET = (None, False, "", [], {})


class NotMapped(Exception):
    """A source key (or its value) that has no peftstudio equivalent; the message says why."""


@dataclass
class ImportResult:
    kind: str
    source: Path
    values: dict[str, Any]  # flat dotted peftstudio keys
    group_selections: dict[str, str]  # e.g. {"peft": "qlora"}: written as a defaults list
    mapped: dict[str, list[str]] = field(default_factory=dict)  # source key → peftstudio keys
    unmapped: dict[str, str] = field(default_factory=dict)  # source key → reason
    unset: list[str] = field(default_factory=list)  # unknown keys left null / false / empty in the source
    raw: dict[str, Any] = field(default_factory=dict)  # the source file's keys and values
    yaml_text: str = ""

    def unmapped_lines(self) -> list[str]:
        """`key = value: reason` per key not mapped (credential-like values redacted)."""
        return [f"{key} = {describe_value(key, self.raw.get(key))}: {reason}" for key, reason in self.unmapped.items()]


# ---- small rule builders -------------------------------------------------------------------

def to(key: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    """Map the value to one peftstudio key, converted."""
    return lambda value, _source: [(key, convert(value))]


def switch(value: Any) -> str:
    return "on" if bool(value) else "off"


def not_mapped(reason: str) -> Rule:
    def rule(_value, _source):
        raise NotMapped(reason)
    return rule


def whole_epochs(value: Any) -> int:
    if float(value) != math.floor(float(value)):
        raise NotMapped(f"{value} is not a whole number of epochs; set training.num_batches instead")
    return int(value)


def positive(key: str, convert: Callable[[Any], Any] = int) -> Rule:
    """Map when the value is a positive number; None / <= 0 mean 'unset' in HF and Axolotl."""
    def rule(value, _source):
        if value is None or float(value) <= 0:
            raise NotMapped(f"{value!r} means unset here; peftstudio keeps its own {key}")
        return [(key, convert(value))]
    return rule


OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_hf": "adamw_torch", "adamw": "adamw_torch",
              "adamw_torch_fused": "adamw_torch_fused", "adafactor": "adafactor", "sgd": "sgd"}
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "polynomial": "polynomial",
              "constant_with_warmup": "constant"}
PEFT_ALGORITHMS = ("lora", "qlora", "dora", "qdora", "rslora", "pissa")


def optimizer(value: Any) -> str:
    if str(value) not in OPTIMIZERS:
        raise NotMapped(f"optimizer {value!r} is not available; peftstudio offers {', '.join(sorted(set(OPTIMIZERS.values())))}")
    return OPTIMIZERS[str(value)]


def scheduler(value: Any) -> str:
    if str(value) not in SCHEDULERS:
        raise NotMapped(f"scheduler {value!r} is not available; peftstudio offers cosine, linear, constant, polynomial")
    return SCHEDULERS[str(value)]


def best_metric(value: Any) -> str:
    if value is None:
        raise NotMapped("null: no best-model tracking")
    return "eval_" + str(value).removeprefix("eval_")


def steps_strategy(value: Any, _source) -> Mapped:
    if str(value).lower() not in ("steps", "intervalstrategy.steps"):
        raise NotMapped(f"{value!r}: peftstudio schedules logging, evaluation and saving by steps only")
    return []


def output_dir(value: Any, _source) -> Mapped:
    return [("training.output_dir", str(value)), ("training.checkpoint_dir", f"{str(value).rstrip('/')}/checkpoints")]


def trackers(value: Any, _source) -> Mapped:
    names = [value] if isinstance(value, str) else list(value or [])
    unknown = [n for n in names if n not in ("wandb", "mlflow", "tensorboard", "none", "all")]
    if unknown:
        raise NotMapped(f"trackers {unknown} are not supported (peftstudio has tensorboard, wandb, mlflow)")
    chosen = ("wandb", "mlflow", "tensorboard") if "all" in names else [n for n in names if n != "none"]
    return [(f"logging.{name}", True) for name in chosen]


# ---- HF TrainingArguments / SFTConfig JSON ---------------------------------------------------

def hf_precision(_value: Any, source: dict[str, Any]) -> Mapped:
    if source.get("bf16"):
        return [("training.precision", "bf16")]
    if source.get("fp16"):
        return [("training.precision", "fp16")]
    return [("training.precision", "fp32")]


def hf_warmup_steps(value: Any, _source) -> Mapped:
    if not value:
        raise NotMapped("0: no warmup steps (warmup_ratio decides)")
    if 0 < float(value) < 1:  # transformers 5 reads a fraction as a ratio of the run
        return [("optim.warmup_ratio", float(value))]
    return [("optim.warmup_steps", int(value))]


def hf_epochs(value: Any, source: dict[str, Any]) -> Mapped:
    if (source.get("max_steps") or -1) > 0:
        raise NotMapped("max_steps is set and overrides it, as in transformers")
    return [("training.num_epochs", whole_epochs(value))]


def hf_interval(key: str) -> Rule:
    def rule(value, _source):
        if value is None or (isinstance(value, float) and value < 1):
            raise NotMapped(f"{value!r}: a fraction of the run (or unset); peftstudio wants whole steps in {key}")
        return [(key, int(value))]
    return rule


def loss_on_completion(value: Any, source: dict[str, Any]) -> Mapped:
    if value is None:
        raise NotMapped("null: TRL decides from the data; peftstudio's training.loss_on decides")
    return [("training.loss_on", "completion" if value else "all")]


HF_RULES: dict[str, Rule] = {
    "output_dir": output_dir,
    "per_device_train_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_train_epochs": hf_epochs,
    "max_steps": positive("training.num_batches"),
    "learning_rate": to("optim.learning_rate", float),
    "weight_decay": to("optim.weight_decay", float),
    "adam_beta1": lambda v, s: [("optim.betas", [float(v), float(s.get("adam_beta2", 0.999))])],
    "adam_beta2": lambda v, s: [("optim.betas", [float(s.get("adam_beta1", 0.9)), float(v)])],
    "adam_epsilon": to("optim.eps", float),
    "max_grad_norm": to("optim.max_grad_norm", float),
    "lr_scheduler_type": to("optim.lr_scheduler", scheduler),
    "warmup_ratio": positive("optim.warmup_ratio", float),
    "warmup_steps": hf_warmup_steps,
    "optim": to("optim.name", optimizer),
    "seed": to("seed", int),
    "bf16": hf_precision,
    "fp16": hf_precision,
    "use_cpu": lambda v, _s: [("device", "cpu")] if v else [],
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "logging_steps": hf_interval("training.log_interval_steps"),
    "save_steps": hf_interval("training.save_interval_steps"),
    "eval_steps": hf_interval("training.eval_interval_steps"),
    "save_total_limit": positive("training.save_total_limit"),
    "metric_for_best_model": to("training.metric_for_best_model", best_metric),
    "max_length": positive("training.max_seq_length"),
    "max_seq_length": positive("training.max_seq_length"),
    "packing": to("training.packing", switch),
    "completion_only_loss": loss_on_completion,
    "assistant_only_loss": lambda v, s: [("training.loss_on", "completion")] if v else [],
    "resume_from_checkpoint": lambda v, _s: [("training.resume", str(v))] if v else [],
    "report_to": trackers,
    "logging_strategy": steps_strategy,
    "save_strategy": steps_strategy,
    "eval_strategy": lambda v, s: [] if str(v).lower() in ("no", "intervalstrategy.no") else steps_strategy(v, s),
    "per_device_eval_batch_size": not_mapped("peftstudio evaluates with training.micro_batch_size"),
    "load_best_model_at_end": not_mapped("peftstudio keeps the best checkpoint (training.metric_for_best_model) "
                                         "and saves the final adapter"),
}


# ---- Axolotl YAML --------------------------------------------------------------------------

def axolotl_adapter(value: Any, source: dict[str, Any]) -> Mapped:
    """adapter + load_in_4bit/8bit + peft_use_dora/rslora → one peft group and its flags."""
    if value not in ("lora", "qlora"):
        raise NotMapped(f"adapter {value!r}: peftstudio trains LoRA-family adapters only")
    quantized = value == "qlora" or source.get("load_in_4bit") or source.get("load_in_8bit")
    dora, rslora = bool(source.get("peft_use_dora")), bool(source.get("peft_use_rslora"))
    group = ("qdora" if dora else "qlora") if quantized else ("dora" if dora else "rslora" if rslora else "lora")
    mapped: Mapped = [("defaults.peft", group)]
    if rslora and group != "rslora":
        mapped.append(("peft.use_rslora", True))
    if quantized and source.get("load_in_8bit"):
        mapped += [("peft.quantization", "int8"), ("peft.double_quant", False)]
    return mapped


def axolotl_targets(value: Any, _source) -> Mapped:
    if not value:
        raise NotMapped("empty list")
    return [("peft.target_modules", list(value))]


def axolotl_datasets(value: Any, _source) -> Mapped:
    datasets = list(value or [])
    if not datasets or not isinstance(datasets[0], dict) or "path" not in datasets[0]:
        raise NotMapped("no dataset with a path")
    if len(datasets) > 1:
        raise NotMapped(f"{len(datasets)} datasets; peftstudio trains on one data.path (merge them into one file)")
    formats = {"alpaca": "instruction", "chat_template": "chat", "chatml": "chat", "sharegpt": "sharegpt",
               "completion": "text", "input_output": "prompt_completion"}
    mapped: Mapped = [("data.path", str(datasets[0]["path"]))]
    kind = datasets[0].get("type")
    if kind in formats:
        mapped.append(("data.format", formats[kind]))
    elif kind is not None:
        raise NotMapped(f"dataset type {kind!r} has no peftstudio format (auto-detection may still read it)")
    return mapped


def axolotl_precision(value: Any, key: str) -> Mapped:
    if value == "auto":
        return [("training.precision", "auto")]
    return [("training.precision", key)] if value else []


def axolotl_validation(value: Any, _source) -> Mapped:
    if float(value) >= 1:
        raise NotMapped(f"{value} rows: peftstudio's data.validation_split is a share below 1")
    return [("data.validation_split", float(value))]


AXOLOTL_RULES: dict[str, Rule] = {
    "base_model": to("model.name_or_path", str),
    "adapter": axolotl_adapter,
    "load_in_4bit": lambda v, s: [] if s.get("adapter") in ("lora", "qlora") else axolotl_adapter("qlora", s),
    "load_in_8bit": lambda v, s: [] if s.get("adapter") in ("lora", "qlora") else not_mapped("needs adapter: lora")(v, s),
    "peft_use_dora": lambda v, s: [] if "adapter" in s else not_mapped("needs adapter: lora")(v, s),
    "peft_use_rslora": lambda v, s: [] if "adapter" in s else not_mapped("needs adapter: lora")(v, s),
    "lora_r": to("peft.r", int),
    "lora_alpha": to("peft.alpha", float),
    "lora_dropout": to("peft.dropout", float),
    "lora_target_modules": axolotl_targets,
    "lora_target_linear": lambda v, _s: [("peft.target_modules", "all-linear")] if v else [],
    "sequence_len": to("training.max_seq_length", int),
    "sample_packing": to("training.packing", switch),
    "micro_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_epochs": to("training.num_epochs", whole_epochs),
    "max_steps": positive("training.num_batches"),
    "learning_rate": to("optim.learning_rate", float),
    "optimizer": to("optim.name", optimizer),
    "lr_scheduler": to("optim.lr_scheduler", scheduler),
    "warmup_steps": positive("optim.warmup_steps"),
    "warmup_ratio": positive("optim.warmup_ratio", float),
    "weight_decay": to("optim.weight_decay", float),
    "max_grad_norm": to("optim.max_grad_norm", float),
    "adam_beta1": HF_RULES["adam_beta1"],
    "adam_beta2": HF_RULES["adam_beta2"],
    "adam_epsilon": to("optim.eps", float),
    "bf16": lambda v, _s: axolotl_precision(v, "bf16"),
    "fp16": lambda v, _s: axolotl_precision(v, "fp16"),
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "flash_attention": lambda v, _s: [("training.attention", "flash_attention_2")] if v else [],
    "sdp_attention": lambda v, _s: [("training.attention", "sdpa")] if v else [],
    "output_dir": output_dir,
    "val_set_size": axolotl_validation,
    "datasets": axolotl_datasets,
    "train_on_inputs": lambda v, _s: [("training.loss_on", "all" if v else "completion")],
    "logging_steps": hf_interval("training.log_interval_steps"),
    "save_steps": hf_interval("training.save_interval_steps"),
    "eval_steps": hf_interval("training.eval_interval_steps"),
    "save_total_limit": positive("training.save_total_limit"),
    "early_stopping_patience": positive("training.early_stopping_patience"),
    "seed": to("seed", int),
    "resume_from_checkpoint": HF_RULES["resume_from_checkpoint"],
    "wandb_project": lambda v, _s: [("logging.wandb", True), ("logging.wandb_project", str(v))] if v else [],
    "use_tensorboard": lambda v, _s: [("logging.tensorboard", True)] if v else [],
    "use_mlflow": lambda v, _s: [("logging.mlflow", True)] if v else [],
    "mlflow_tracking_uri": lambda v, _s: [("logging.mlflow", True), ("logging.mlflow_tracking_uri", str(v))] if v else [],
    "mlflow_experiment_name": lambda v, _s: [("logging.mlflow_experiment", str(v))] if v else [],
    "trust_remote_code": to("model.trust_remote_code", bool),
}


# ---- wizard JSON ---------------------------------------------------------------------------

def wizard_algorithm(value: Any, _source) -> Mapped:
    if str(value).lower() not in PEFT_ALGORITHMS:
        raise NotMapped(f"algorithm {value!r} is not one of {', '.join(PEFT_ALGORITHMS)}")
    return [("defaults.peft", str(value).lower())]


def wizard_quantization(value: Any, _source) -> Mapped:
    names = {"nf4": "nf4", "fp4": "fp4", "int8": "int8", "8bit": "int8", "4bit": "nf4", "none": "none", None: "none"}
    if value not in names:
        raise NotMapped(f"quantization {value!r} is not one of nf4, fp4, int8, none")
    return [("peft.quantization", names[value])]


WIZARD_RULES: dict[str, Rule] = {
    "algorithm": wizard_algorithm,
    "method": wizard_algorithm,
    "model": to("model.name_or_path", str),
    "base_model": to("model.name_or_path", str),
    "dataset": to("data.path", str),
    "rank": to("peft.r", int),
    "alpha": to("peft.alpha", float),
    "dropout": to("peft.dropout", float),
    "target_modules": to("peft.target_modules"),
    "quantization": wizard_quantization,
    "double_quantization": to("peft.double_quant", bool),
    "compute_dtype": to("peft.compute_dtype", str),
    "learning_rate": to("optim.learning_rate", float),
    "optimizer": to("optim.name", optimizer),
    "lr_scheduler": to("optim.lr_scheduler", scheduler),
    "warmup_ratio": to("optim.warmup_ratio", float),
    "weight_decay": to("optim.weight_decay", float),
    "batch_size": to("training.micro_batch_size", int),
    "micro_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_epochs": to("training.num_epochs", whole_epochs),
    "max_steps": positive("training.num_batches"),
    "max_seq_length": to("training.max_seq_length", int),
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "precision": to("training.precision", str),
    "seed": to("seed", int),
    "output_dir": output_dir,
}


# ---- the conversion ------------------------------------------------------------------------

def detect_kind(path: Path, data: dict[str, Any]) -> tuple[str, dict[str, Rule]]:
    """Which foreign format `data` is, from its keys (and the file type)."""
    if "algorithm" in data or ("rank" in data and "lora_r" not in data):
        return "wizard JSON", WIZARD_RULES
    if {"base_model", "adapter", "lora_r", "sequence_len", "datasets", "micro_batch_size"} & set(data):
        return "Axolotl YAML", AXOLOTL_RULES
    if {"per_device_train_batch_size", "num_train_epochs", "output_dir", "logging_steps"} & set(data):
        return "HF TrainingArguments / SFTConfig JSON", HF_RULES
    raise UserError(Problem(str(path), "not a recognised config: none of the keys of an HF TrainingArguments JSON, "
                            "an Axolotl YAML or a wizard JSON (algorithm, rank, ...) were found",
                            "pass args.to_json_string() output, an Axolotl config, or a wizard JSON"))


def read_source(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(Problem(str(path), "file not found", "pass an existing JSON or YAML file"))
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise UserError(Problem(str(path), f"cannot be read: {str(error).splitlines()[0]}",
                                "pass a valid JSON or YAML file")) from None
    if not isinstance(data, dict):
        raise UserError(Problem(str(path), f"top level is a {type(data).__name__}, not a mapping of keys",
                                "pass a JSON object or YAML mapping"))
    return data


def import_file(path: Path) -> ImportResult:
    """Convert `path` into a validated peftstudio config; every unmapped key listed."""
    source = read_source(path)
    kind, rules = detect_kind(path, source)
    result = ImportResult(kind, path, {}, {}, raw=source)
    for key, value in source.items():
        _apply(result, key, value, source, rules)
    _drop_invalid(result)
    result.yaml_text = render_yaml(result)
    return result


def _apply(result: ImportResult, key: str, value: Any, source: dict[str, Any], rules: dict[str, Rule]) -> None:
    rule = rules.get(key)
    if rule is None and any(value is unset or value == unset for unset in _UNSET if type(value) is type(unset)):
        result.unset.append(key)  # a switched-off feature: listed, but there is nothing to carry over
        return
    if rule is None:
        result.unmapped[key] = "no peftstudio equivalent"
        return
    try:
        pairs = rule(value, source)
    except NotMapped as reason:
        result.unmapped[key] = str(reason)
        return
    except (TypeError, ValueError) as error:
        result.unmapped[key] = f"value not understood ({error})"
        return
    for dotted, mapped in pairs:
        if dotted.startswith("defaults."):
            result.group_selections[dotted.removeprefix("defaults.")] = mapped
        else:
            result.values[dotted] = mapped
    result.mapped[key] = [dotted for dotted, _ in pairs]


def _drop_invalid(result: ImportResult, rounds: int = 5) -> None:
    """Validate as `peftstudio validate` does; a rejected value moves to the not-mapped list."""
    for _ in range(rounds):
        problems = validate_text(render_yaml(result, with_comments=False))
        if not problems:
            return
        for problem in problems:
            owners = [source for source, keys in result.mapped.items() if problem.where in keys]
            for owner in owners or [problem.where]:
                for dotted in result.mapped.pop(owner, []):
                    result.values.pop(dotted, None)
                result.unmapped[owner] = f"rejected by the schema: {problem.message}"
    remaining = validate_text(render_yaml(result, with_comments=False))
    if remaining:
        raise UserError(remaining, headline="the imported config does not validate")


def validate_text(text: str) -> list[Problem]:
    """Problems `peftstudio validate` reports for a config with this text."""
    from peftstudio.config.validate import load_config

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config([], path)
        except UserError as error:
            return error.problems
    return []


def render_yaml(result: ImportResult, with_comments: bool = True) -> str:
    """The peftstudio YAML: a defaults list for group selections, nested sections, then the
    not-mapped keys as comments."""
    nested: dict[str, Any] = {}
    if result.group_selections:
        nested["defaults"] = [{group: option} for group, option in result.group_selections.items()]
    for dotted, value in result.values.items():
        target = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=False)
    if not with_comments:
        return body
    header = f"# Imported by `peftstudio import` from {result.source.name} ({result.kind}).\n"
    return header + body + _unmapped_comments(result)


def _unmapped_comments(result: ImportResult) -> str:
    if not result.unmapped and not result.unset:
        return "# Every key was mapped.\n"
    lines = []
    if result.unmapped:
        lines.append(f"# Not mapped ({len(result.unmapped)} key(s)): review these by hand.")
        lines += [f"#   {line}" for line in result.unmapped_lines()]
    if result.unset:
        lines.append(f"# Not mapped, left null / false / empty in the source ({len(result.unset)} key(s)):")
        lines += textwrap.wrap(", ".join(result.unset), width=96, initial_indent="#   ", subsequent_indent="#   ")
    return "\n".join(lines) + "\n"


def describe_value(key: str, value: Any) -> str:
    """A value as it may be shown to the user: credential-like keys are never echoed."""
    return REDACTED if is_secret_name(key) else json.dumps(value, default=str)[:80]
