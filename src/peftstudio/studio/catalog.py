"""What the wizard offers: the shipped presets and, per step, the config fields it edits with
their documentation, range and choices — all read from the schema and the group files, so the
studio can never drift from what the CLI validates."""

from __future__ import annotations

import typing
from typing import Any

from peftstudio.config.compose import group_options
from peftstudio.config.explain import Explanation, explain
from peftstudio.config.introspect import FieldDoc, find_field, literal_choices

# The fields each step edits; keys that this build's schema lacks are skipped.
STEP_FIELDS = {
    2: ["peft.r", "peft.alpha", "peft.dropout", "peft.target_modules", "peft.quantization", "peft.double_quant"],
    3: ["optim.learning_rate", "optim.lr_scheduler", "optim.warmup_ratio", "optim.warmup_steps",
        "training.micro_batch_size", "training.gradient_accumulation_steps", "training.num_batches",
        "training.num_epochs", "training.max_seq_length", "training.precision", "training.gradient_checkpointing",
        "training.early_stopping_patience", "training.eval_interval_steps", "training.save_interval_steps",
        "training.log_interval_steps"],
    5: ["data.format", "data.validation_split", "data.max_samples", "training.loss_on"],
}
STEP_TITLES = {1: "Base model", 2: "PEFT method", 3: "Hyperparameters", 4: "Compute", 5: "Dataset",
               6: "Experiment tracking", 7: "Review and launch"}
# Secrets a tracker reads from the environment; entered in step 6, kept in the server's memory.
TRACKER_SECRETS = {"wandb": ["WANDB_API_KEY"], "mlflow": ["MLFLOW_TRACKING_TOKEN"]}


def field_info(doc: FieldDoc) -> dict[str, Any]:
    """One field as the browser needs it to draw an input and explain it."""
    annotation = doc.info.annotation
    args = typing.get_args(annotation)
    kinds = {a for a in (args or (annotation,)) if a is not type(None)}
    if kinds == {bool}:
        kind = "bool"
    elif literal_choices(annotation) and all(k is not list and getattr(k, "__origin__", None) is not list for k in kinds):
        kind = "choice"
    elif kinds <= {int}:
        kind = "int"
    elif kinds <= {int, float} or kinds == {float}:
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
    result = []
    for number, title in STEP_TITLES.items():
        docs = [find_field(key) for key in STEP_FIELDS.get(number, [])]
        result.append({"step": number, "title": title, "fields": [field_info(doc) for doc in docs if doc]})
    return result


def presets() -> dict[str, Any]:
    """Every group's options with their summary line and the values they set."""
    groups = {}
    for group in ("model", "peft", "training", "optim", "logging", "experiment", "platform"):
        try:
            groups[group] = [_option_info(group, option) for option in group_options(group)]
        except FileNotFoundError:
            continue
    for option in groups.get("logging", []):
        option["secrets"] = TRACKER_SECRETS.get(option["name"], [])
    return groups


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
