"""What the wizard offers: the shipped presets and, per step, the config fields it edits with
their documentation, range and choices — all read from the schema and the group files, so the
studio can never drift from what the CLI validates."""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from typing import Any

from peftstudio.config.compose import group_options
from peftstudio.config.explain import Explanation, explain
from peftstudio.config.introspect import FieldDoc, find_field, literal_choices
from peftstudio.plan.hardware import HardwareProfile

# The fields each step edits.
STEP_FIELDS = {
    2: ["peft.r", "peft.alpha", "peft.dropout", "peft.target_modules", "peft.quantization", "peft.double_quant"],
    3: ["optim.learning_rate", "optim.lr_scheduler", "optim.warmup_ratio", "optim.warmup_steps",
        "training.micro_batch_size", "training.gradient_accumulation_steps", "training.num_batches",
        "training.num_epochs", "training.max_seq_length", "training.precision", "training.gradient_checkpointing",
        "training.early_stopping_patience", "training.eval_interval_steps", "training.save_interval_steps",
        "training.log_interval_steps"],
    5: ["data.format", "data.columns", "data.chat_template", "data.validation_split", "data.max_samples",
        "data.overlong", "training.loss_on"],
    6: ["logging.project", "logging.run_name", "logging.tags", "logging.notes", "logging.wandb_project",
        "logging.mlflow_tracking_uri", "logging.mlflow_experiment", "logging.phoenix_endpoint", "logging.trackio_dir",
        "logging.watch"],
}
# Step 2 also edits the chosen objective's section (every key but the rewards, which have their
# own editor); the browser shows the section of the objective picked.
OBJECTIVE_SECTIONS = ("dpo", "orpo", "kto", "grpo")
REWARDS_KEY = "grpo.rewards"
STEP_TITLES = {1: "Base model", 2: "PEFT method", 3: "Hyperparameters", 4: "Compute", 5: "Dataset",
               6: "Experiment tracking", 7: "Review and launch"}
# Secrets a tracker reads from the environment; entered in step 6, kept in the server's memory.
TRACKER_SECRETS = {"wandb": ["WANDB_API_KEY"], "mlflow": ["MLFLOW_TRACKING_TOKEN"], "comet": ["COMET_API_KEY"]}


def field_info(doc: FieldDoc) -> dict[str, Any]:
    """One field as the browser needs it to draw an input and explain it."""
    annotation = doc.info.annotation
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if is_union else (annotation,)
    kinds = {a for a in args if a is not type(None)}
    literal = {k for k in kinds if typing.get_origin(k) is typing.Literal}
    numbers = kinds - literal
    if kinds == {bool}:
        kind = "bool"
    elif literal and not numbers:
        kind = "choice"
    elif numbers and numbers <= {int}:
        kind = "int"  # may also take a word such as `auto` (see choices)
    elif numbers and numbers <= {int, float}:
        kind = "float"
    else:
        kind = "text"
    return {
        "key": doc.key, "kind": kind, "description": doc.description, "type": doc.type_text,
        "range": doc.range_text, "choices": [str(c) for c in literal_choices(annotation)],
        "default": doc.default, "memory": doc.memory_note, "nullable": type(None) in args,
    }


def steps() -> list[dict[str, Any]]:
    """The seven steps with the fields each edits."""
    from peftstudio.config.introspect import keys_under

    result = []
    for number, title in STEP_TITLES.items():
        keys = list(STEP_FIELDS.get(number, []))
        if number == 2:
            keys += [key for section in OBJECTIVE_SECTIONS for key in keys_under(section) if key != REWARDS_KEY]
        result.append({"step": number, "title": title, "fields": [field_info(find_field(key)) for key in keys]})
    return result


def presets() -> dict[str, Any]:
    """Every group's options with their summary line and the values they set, and under
    `known_models` the hub ids whose architecture peftstudio knows offline (its catalogue), so
    the model field can suggest them."""
    groups: dict[str, Any] = {group: [_option_info(group, option) for option in group_options(group)]
                              for group in ("model", "peft", "training", "optim", "logging", "experiment", "platform")}
    for option in groups["logging"]:
        option["secrets"] = TRACKER_SECRETS.get(option["name"], [])
    for option in groups["model"]:
        option["memory"] = preset_memory(option["name"])
    groups["objective"] = objective_options()
    groups["rewards"] = reward_functions()
    groups["known_models"] = known_hub_models()
    return groups


def objective_options() -> list[dict[str, Any]]:
    """The objectives in the schema's order, each with its "best for" line, the data it reads
    and its group file's summary."""
    from peftstudio.config.objective_schema import OBJECTIVE_BEST_FOR, OBJECTIVES
    from peftstudio.data.objective_data import FORMAT_COLUMNS, OBJECTIVE_FORMAT

    options = {option: _option_info("objective", option) for option in group_options("objective")}
    result = []
    for name in OBJECTIVES:
        data_format = OBJECTIVE_FORMAT.get(name)
        data = f"{data_format} data ({', '.join(FORMAT_COLUMNS[data_format])})" if data_format else \
            "instruction, chat or text data"
        result.append({**options[name], "best_for": OBJECTIVE_BEST_FOR[name], "data": data})
    return result


def reward_functions() -> dict[str, Any]:
    """The built-in reward functions and the argument each needs, for the GRPO reward editor."""
    from peftstudio.rewards import BUILTINS, DEFAULT_COLUMN, PYTHON_PREFIX, arguments_of

    return {"builtins": [{"name": name, "arguments": arguments_of(name)} for name in BUILTINS],
            "default_column": DEFAULT_COLUMN, "python_prefix": PYTHON_PREFIX}


def known_hub_models() -> list[dict[str, Any]]:
    """Each hub id of the catalogue (twins included) with its family and parameter count."""
    from peftstudio.config.known_models import catalogue_entries
    from peftstudio.plan.architecture import base_parameters

    return [{"hub_id": hub_id, "model_type": entry.architecture.model_type,
             "total_parameters": base_parameters(entry.architecture), "source": entry.source}
            for entry in catalogue_entries() for hub_id in (entry.hub_id, *entry.also)]


# The machine model presets are compared on: a bf16 GPU whose memory is not known, so
# resolution keeps gradient checkpointing on and the figures do not depend on this host.
REFERENCE_GPU = HardwareProfile("cuda", 1, ["a bf16 GPU"], [0], "8.0", gpu_bf16=True)


@lru_cache(maxsize=None)
def preset_memory(model: str) -> dict[str, int] | None:
    """Parameters and predicted peak memory of a model preset with the default LoRA run
    (the CLI's estimator on the composed defaults, resolved for `REFERENCE_GPU`); None when
    the preset cannot be estimated."""
    from peftstudio.config.validate import load_config
    from peftstudio.errors import PeftStudioError
    from peftstudio.plan.memory import estimate_memory
    from peftstudio.plan.resolve import resolve

    try:
        config, _ = load_config([f"model={model}"])
        estimate = estimate_memory(resolve(config, REFERENCE_GPU, None).config)
    except PeftStudioError:
        return None
    return {"total_parameters": estimate.total_parameters, "total_bytes": estimate.total_bytes,
            "micro_batch_size": estimate.micro_batch_size, "seq_len": estimate.seq_len}


def _option_info(group: str, option: str) -> dict[str, Any]:
    explained: Explanation = explain(f"{group}={option}")
    chosen = explained.options[0]
    return {"name": chosen.name, "summary": chosen.summary, "sets": chosen.sets}


def explanation_dict(key: str) -> dict[str, Any]:
    """`peftstudio explain KEY` as JSON."""
    explained = explain(key)
    return {
        "key": explained.key,
        "field": field_info(explained.doc) if explained.doc and not explained.doc.is_section else None,
        "children": [field_info(doc) for doc in explained.children if doc and not doc.is_section],
        "options": [{"name": o.name, "summary": o.summary, "sets": o.sets} for o in explained.options],
        "set_by": explained.set_by,
    }
