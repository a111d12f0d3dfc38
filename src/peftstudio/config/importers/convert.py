"""`peftstudio convert --to axolotl|trl|llamafactory`: a peftstudio config in another tool's
words, written so that `peftstudio import` of it gives back the same config. What the other
tool cannot say (an `auto` value, a peftstudio-only key) is listed as a note, never dropped
silently."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError

TOOLS = ("axolotl", "trl", "llamafactory")
AXOLOTL_FORMATS = {"instruction": "alpaca", "chat": "chat_template", "sharegpt": "chat_template", "text": "completion"}


@dataclass
class Converted:
    tool: str
    text: str
    notes: list[str] = field(default_factory=list)
    sidecars: dict[str, str] = field(default_factory=dict)  # file name → text, written beside the output


def load(source: Path) -> RunConfig:
    """A peftstudio config file, validated (a run dir is read by the caller, through its plan)."""
    from peftstudio.config.validate import load_config

    if not source.is_file():
        raise UserError(Problem(str(source), "neither a run dir nor a config file",
                                "pass a finished run's output dir or a peftstudio YAML"))
    return load_config([], source)[0]


def convert(config: RunConfig, tool: str, source_name: str, detected_format: str | None = None,
            epochs_based: bool = False) -> Converted:
    """`config` in `tool`'s words. `detected_format`: what the run's plan read data.format=auto
    as; `epochs_based`: the run's length is training.num_epochs (else training.num_batches,
    written as max_steps, which outranks epochs in all three tools)."""
    if tool not in TOOLS:
        raise UserError(Problem("--to", f"{tool!r} is not a format convert writes", f"use one of {', '.join(TOOLS)}"))
    notes: list[str] = []
    if config.data.format == "auto" and detected_format and not config.data.datasets:
        config = config.model_copy(update={"data": config.data.model_copy(update={"format": detected_format})})
        notes.append(f"data.format=auto: written as {detected_format}, the format the run read")
    values = {"axolotl": to_axolotl, "trl": to_trl, "llamafactory": to_llamafactory}[tool](config, notes)
    _image_text(config, tool, values, notes)
    if config.eval.metrics:
        names = ", ".join(spec.name for spec in config.eval.metrics)
        notes.append(f"eval.metrics ({names}) has no equivalent there: not written; the converted run evaluates loss only")
    if not epochs_based:
        values["max_steps"] = config.training.num_batches
    sidecars = values.pop("__sidecars__", {})
    text = f"# Written by `peftstudio convert --to {tool}` from {source_name}.\n" + \
        yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    return Converted(tool, text, notes, sidecars)


def _image_text(config: RunConfig, tool: str, values: dict[str, Any], notes: list[str]) -> None:
    """An image-text model's settings the other tool says differently, or cannot say (notes)."""
    arch = config.model.architecture
    if config.data.image_grid:
        notes.append(f"data.image_grid={config.data.image_grid} has no equivalent in {tool}: compose each record's images "
                     "into the grid beforehand (row-major, tiles the first image's size)")
    if arch is None or arch.vision is None:
        return
    scope = config.peft.target_scope
    if tool == "llamafactory":  # LLaMA-Factory's freeze flags say the same as peft.target_scope
        values.update(freeze_vision_tower=scope == "language", freeze_multi_modal_projector=True,
                      freeze_language_model=scope == "vision")
        notes.append("image data: add \"images\": \"images\" to the dataset's columns in dataset_info.json, with <image> "
                     "placeholders in the text; paths relative to dataset_dir")
    elif tool == "axolotl":
        values["processor_type"] = "AutoProcessor"
        notes.append(f"peft.target_scope={scope}: Axolotl's lora_target_linear puts adapters on every Linear layer, the "
                     "vision tower's too; restrict lora_target_modules to match")
    else:
        notes.append(f"peft.target_scope={scope}: TRL's all-linear targets the vision tower too; restrict "
                     "target_modules to match")


def _concrete(value: Any, key: str, notes: list[str], fallback: Any) -> Any:
    if value == "auto":
        notes.append(f"{key}=auto has no equivalent there; written as {fallback!r}")
        return fallback
    return value


def _common_checks(config: RunConfig, notes: list[str]) -> None:
    if config.peft.init not in ("default", "loftq"):
        notes.append(f"peft.init={config.peft.init} has no equivalent; written as the default initialisation")
    if config.training.micro_batch_size == "auto":
        raise UserError(Problem("training.micro_batch_size", "auto: the other tool needs a number",
                                "convert a run dir (its resolved config), or set training.micro_batch_size"))


def _schedule(config: RunConfig, epochs_key: str, steps_key: str) -> dict[str, Any]:
    training, optim = config.training, config.optim
    out = {epochs_key: training.num_epochs, steps_key: training.num_batches}
    if optim.warmup_steps is not None:
        out["warmup_steps"] = optim.warmup_steps
    else:
        out["warmup_ratio"] = optim.warmup_ratio
    return out


def to_axolotl(config: RunConfig, notes: list[str]) -> dict[str, Any]:
    _common_checks(config, notes)
    peft, training, optim, data = config.peft, config.training, config.optim, config.data
    quantized = peft.quantization == "nf4"
    out: dict[str, Any] = {"base_model": config.model.name_or_path, "adapter": "qlora" if quantized else "lora"}
    if quantized:
        out["load_in_4bit"] = True
    if peft.quantization == "int8":
        out["load_in_8bit"] = True
    if peft.quantization == "fp4" or (quantized and not peft.double_quant):
        notes.append("Axolotl's qlora is NF4 with double quantization; peft.quantization/double_quant differ")
    if peft.method in ("dora", "qdora") or peft.use_dora:
        out["peft_use_dora"] = True
    if peft.method == "rslora" or peft.use_rslora:
        out["peft_use_rslora"] = True
    if peft.init == "loftq":
        out["peft"] = {"loftq_config": {"loftq_bits": 4}}
    out.update(lora_r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout)
    if peft.target_modules == "all-linear":
        out["lora_target_linear"] = True
    else:
        out["lora_target_modules"] = list(peft.target_modules)
    out["datasets"] = [_axolotl_dataset(s) for s in _sources(config)]
    out.update(val_set_size=data.validation_split, sequence_len=training.max_seq_length,
               sample_packing=_concrete(training.packing, "training.packing", notes, "off") == "on",
               micro_batch_size=training.micro_batch_size, gradient_accumulation_steps=training.gradient_accumulation_steps,
               num_epochs=training.num_epochs, max_steps=training.num_batches, optimizer=optim.name,
               lr_scheduler=optim.lr_scheduler, learning_rate=optim.learning_rate, weight_decay=optim.weight_decay,
               max_grad_norm=optim.max_grad_norm, adam_beta1=optim.betas[0], adam_beta2=optim.betas[1],
               adam_epsilon=optim.eps, train_on_inputs=training.loss_on == "all", seed=config.seed,
               output_dir=training.output_dir, logging_steps=training.log_interval_steps,
               save_steps=training.save_interval_steps, eval_steps=training.eval_interval_steps,
               save_total_limit=training.save_total_limit)
    out.pop("max_steps")
    out.update(_warmup(optim))
    out.update(_precision_flags(training.precision))
    if training.gradient_checkpointing != "auto":
        out["gradient_checkpointing"] = training.gradient_checkpointing == "on"
    if training.attention != "auto":
        out["attn_implementation"] = training.attention
    if data.chat_template:
        out["chat_template"], out["chat_template_jinja"] = "jinja", data.chat_template
    return out


def _warmup(optim) -> dict[str, Any]:
    return {"warmup_steps": optim.warmup_steps} if optim.warmup_steps is not None else {"warmup_ratio": optim.warmup_ratio}


def _precision_flags(precision: str) -> dict[str, Any]:
    return {"bf16": "auto"} if precision == "auto" else {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def _sources(config: RunConfig) -> list[dict[str, Any]]:
    data = config.data
    first = {"path": data.path, "format": data.format, "columns": data.columns, "split": data.split,
             "subset": data.subset}
    return [first] + [source.model_dump() for source in data.datasets]


def _axolotl_dataset(source: dict[str, Any]) -> dict[str, Any]:
    data_format, columns = source["format"], dict(source.get("columns") or {})
    if data_format not in AXOLOTL_FORMATS:
        raise UserError(Problem("data.format", f"{data_format}: Axolotl needs a dataset type",
                                "set data.format (instruction, chat, sharegpt or text), or convert the run dir"))
    entry: dict[str, Any] = {"path": source["path"], "type": AXOLOTL_FORMATS[data_format]}
    if data_format in ("chat", "sharegpt"):
        column = "messages" if data_format == "chat" else "conversations"
        entry["field_messages"] = columns.get(column, column)
        role, content = ("role", "content") if data_format == "chat" else ("from", "value")
        entry["message_property_mappings"] = {"role": role, "content": content}
    elif data_format == "instruction" and columns:
        entry["type"] = {"field_instruction": columns.get("instruction", "instruction"),
                         "field_input": columns.get("input", "input"), "field_output": columns.get("output", "output")}
    elif data_format == "text" and columns.get("text"):
        entry["field"] = columns["text"]
    if source.get("split", "train") != "train":
        entry["split"] = source["split"]
    if source.get("subset"):
        entry["name"] = source["subset"]
    return entry


def to_trl(config: RunConfig, notes: list[str]) -> dict[str, Any]:
    _common_checks(config, notes)
    peft, _training, _optim, data = config.peft, config.training, config.optim, config.data
    if data.datasets or data.format not in ("auto", "chat") or data.columns:
        raise UserError(Problem("data", "TRL's sft script reads one conversational dataset by name",
                                "convert --to axolotl or llamafactory for other data"))
    out: dict[str, Any] = {"model_name_or_path": config.model.name_or_path, "dataset_name": data.path,
                           "dataset_train_split": data.split, "use_peft": True, "lora_r": peft.r,
                           "lora_alpha": peft.alpha, "lora_dropout": peft.dropout,
                           "lora_target_modules": peft.target_modules if isinstance(peft.target_modules, list)
                           else ["all-linear"]}
    if peft.quantization == "nf4":
        out.update(load_in_4bit=True, use_bnb_nested_quant=peft.double_quant)
    if peft.quantization == "int8":
        out["load_in_8bit"] = True
    if peft.method in ("dora", "qdora") or peft.use_dora:
        out["use_dora"] = True
    if peft.method == "rslora" or peft.use_rslora:
        out["use_rslora"] = True
    out.update(_hf_training(config, notes))
    if data.chat_template:
        out["chat_template"] = data.chat_template
    notes.append(f"data.validation_split={data.validation_split} is not a TRL script argument")
    return out


def _hf_training(config: RunConfig, notes: list[str]) -> dict[str, Any]:
    training, optim = config.training, config.optim
    out = {"output_dir": training.output_dir, "per_device_train_batch_size": training.micro_batch_size,
           "gradient_accumulation_steps": training.gradient_accumulation_steps,
           "num_train_epochs": training.num_epochs, "learning_rate": optim.learning_rate,
           "weight_decay": optim.weight_decay, "adam_beta1": optim.betas[0], "adam_beta2": optim.betas[1],
           "adam_epsilon": optim.eps, "max_grad_norm": optim.max_grad_norm, "lr_scheduler_type": optim.lr_scheduler,
           "optim": optim.name, "seed": config.seed, "max_length": training.max_seq_length,
           "logging_steps": training.log_interval_steps, "save_steps": training.save_interval_steps,
           "eval_steps": training.eval_interval_steps, "save_total_limit": training.save_total_limit,
           "completion_only_loss": training.loss_on == "completion",
           "bf16": training.precision == "bf16", "fp16": training.precision == "fp16"}
    out.update(_warmup(optim))
    if training.precision == "auto":
        notes.append("training.precision=auto has no equivalent there; written as fp32 (bf16/fp16 false)")
    if training.packing != "auto":
        out["packing"] = training.packing == "on"
    if training.gradient_checkpointing != "auto":
        out["gradient_checkpointing"] = training.gradient_checkpointing == "on"
    if training.attention != "auto":
        out["attn_implementation"] = training.attention
    return out


def to_llamafactory(config: RunConfig, notes: list[str]) -> dict[str, Any]:
    _common_checks(config, notes)
    peft, data = config.peft, config.data
    info, names = {}, []
    for index, source in enumerate(_sources(config)):
        name = f"peftstudio_{index}"
        info[name] = _llamafactory_entry(source)
        names.append(name)
    out: dict[str, Any] = {"model_name_or_path": config.model.name_or_path, "stage": "sft", "do_train": True,
                           "finetuning_type": "lora", "lora_rank": peft.r, "lora_alpha": peft.alpha,
                           "lora_dropout": peft.dropout,
                           "lora_target": "all" if peft.target_modules == "all-linear" else ",".join(peft.target_modules),
                           "dataset": ",".join(names), "dataset_dir": ".", "template": "default_from_tokenizer",
                           "cutoff_len": config.training.max_seq_length, "val_size": data.validation_split,
                           "train_on_prompt": config.training.loss_on == "all"}
    if peft.quantization in ("nf4", "fp4", "int8"):
        out["quantization_bit"] = 8 if peft.quantization == "int8" else 4
        if peft.quantization != "int8":
            out.update(quantization_type=peft.quantization, double_quantization=peft.double_quant)
    if peft.method in ("dora", "qdora") or peft.use_dora:
        out["use_dora"] = True
    if peft.use_rslora or peft.method == "rslora":
        out["use_rslora"] = True
    out.update(_hf_training(config, notes))
    out.pop("completion_only_loss")
    out["max_grad_norm"] = config.optim.max_grad_norm
    out["__sidecars__"] = {"dataset_info.json": json.dumps(info, indent=2)}
    notes.append("the datasets are described in dataset_info.json beside the YAML; pass its folder as dataset_dir")
    notes.append("template: use the LLaMA-Factory template of your model (peftstudio used the tokenizer's own)")
    return out


def _llamafactory_entry(source: dict[str, Any]) -> dict[str, Any]:
    data_format, columns = source["format"], dict(source.get("columns") or {})
    entry: dict[str, Any] = {"file_name": source["path"]} if Path(source["path"]).suffix else {"hf_hub_url": source["path"]}
    if data_format == "instruction":
        mapping = {"prompt": columns.get("instruction", "instruction"), "query": columns.get("input", "input"),
                   "response": columns.get("output", "output")}
        entry["columns"] = mapping
    elif data_format in ("chat", "sharegpt"):
        column = "messages" if data_format == "chat" else "conversations"
        entry["formatting"] = "sharegpt"
        entry["columns"] = {"messages": columns.get(column, column)}
        if data_format == "chat":
            entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"}
    else:
        raise UserError(Problem("data.format", f"{data_format}: LLaMA-Factory sft reads instruction or conversation data",
                                "set data.format to instruction, chat or sharegpt"))
    if source.get("split", "train") != "train":
        entry["split"] = source["split"]
    if source.get("subset"):
        entry["subset"] = source["subset"]
    return entry
