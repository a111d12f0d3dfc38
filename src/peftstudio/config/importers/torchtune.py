"""torchtune recipe YAML → peftstudio. The model is the hub id the file's own
`tune download ORG/NAME --output-dir DIR` comment fetched into checkpointer.checkpoint_dir,
else that directory. torchtune's defaults: no gradient clipping (clip_grad_norm null), a
constant learning rate without lr_scheduler, no validation split, lora_dropout 0."""

from __future__ import annotations

import re
from typing import Any

from peftstudio.config.importers import common, datasets
from peftstudio.config.importers.table import (Dialect, Outcome, Refused, Verdict, approx, mapped, switch)

ALPACA_NOTE = "instruction records are rendered with the model's chat template, not torchtune's Alpaca prompt text"
DATASETS = {"alpaca_cleaned_dataset": ("yahma/alpaca-cleaned", "instruction", True),
            "alpaca_dataset": ("tatsu-lab/alpaca", "instruction", True),
            "slimorca_dataset": ("Open-Orca/SlimOrca-Dedup", "sharegpt", False)}
ATTENTION_NAMES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
MLP_NAMES = ["gate_proj", "up_proj", "down_proj"]
DOWNLOAD = re.compile(r"tune download (\S+)[^\n]*?--output-dir (\S+)")


def component(value: Any) -> str:
    return str(value.get("_component_", "")) if isinstance(value, dict) else ""


def model_rule(downloads: dict[str, str]) -> Any:
    def rule(value: dict[str, Any], source: dict[str, Any]) -> Verdict:
        name = component(value).rsplit(".", 1)[-1]
        if not name.startswith(("lora_", "qlora_")):
            raise Refused(f"{name}: a full fine-tune; peftstudio trains LoRA-family adapters only")
        if "vision" in name or "phi3" in name:
            raise Refused(f"{name}: torchtune's module names differ from transformers' for this model")
        folder = str((source.get("checkpointer") or {}).get("checkpoint_dir", "")).rstrip("/")
        model = downloads.get(folder, folder)
        if not model:
            raise Refused("no checkpointer.checkpoint_dir to take the model from")
        quantized = name.startswith("qlora_") or bool(value.get("quantize_base"))
        group = ("qdora" if quantized else "dora") if value.get("use_dora") else ("qlora" if quantized else "lora")
        if value.get("apply_lora_to_output"):
            raise Refused("apply_lora_to_output: an adapter on the output head")
        names = [ATTENTION_NAMES[m] for m in value.get("lora_attn_modules", [])]
        targets = "all-linear" if len(names) == 4 and value.get("apply_lora_to_mlp") else \
            names + (MLP_NAMES if value.get("apply_lora_to_mlp") else [])
        pairs = [("model.name_or_path", common.model_name(model)), ("defaults.peft", group),
                 ("peft.r", int(value["lora_rank"])), ("peft.alpha", float(value["lora_alpha"])),
                 ("peft.dropout", float(value.get("lora_dropout", 0.0))), ("peft.target_modules", targets)]
        note = "" if model != folder else f"the model in {folder} (no `tune download` comment names its hub id)"
        return mapped(*pairs, note=note)
    return rule


def one_dataset(value: Any) -> tuple[dict[str, Any], str]:
    name = component(value).rsplit(".", 1)[-1]
    if name in DATASETS:
        path, data_format, trains_input = DATASETS[name]
        out = {"path": str(value.get("source", path)), "format": data_format}
        note = ALPACA_NOTE if data_format == "instruction" else ""
        # torchtune's alpaca builders train on the prompt too unless train_on_input: false.
        out["loss_on"] = "all" if (trains_input and value.get("train_on_input", True)) else "completion"
        return datasets.clean(out), note
    if name == "chat_dataset":
        style = value.get("conversation_style", "sharegpt")
        column = value.get("conversation_column", "conversations")
        data_format, columns = datasets.conversation_source(
            column, *(("from", "value") if style == "sharegpt" else ("role", "content")), None)
        return datasets.clean({"path": str(value["source"]), "format": data_format, "columns": columns,
                               "split": value.get("split")}), ""
    if name == "instruct_dataset":
        columns = value.get("column_map") or {}
        return datasets.clean({"path": str(value["source"]), "format": "prompt_completion",
                               "columns": {"prompt": columns.get("input", "input"),
                                           "completion": columns.get("output", "output")}}), ""
    if name == "text_completion_dataset":
        return datasets.clean({"path": str(value["source"]), "format": "text",
                               "columns": {"text": value.get("column", "text")}}), ""
    raise Refused(f"dataset {name}: no peftstudio format")


def dataset_rule(value: Any, _source) -> Verdict:
    entries = value if isinstance(value, list) else [value]
    converted = [one_dataset(entry) for entry in entries]
    notes = sorted({note for _, note in converted if note})
    losses = {s.pop("loss_on", "completion") for s, _ in converted}
    if len(losses) > 1:
        raise Refused("some datasets train on the prompt (train_on_input) and others not; peftstudio's "
                      "training.loss_on is one for the run")
    pairs = datasets.source_pairs([s for s, _ in converted]) + [("training.loss_on", losses.pop())]
    if any(entry.get("packed") for entry in entries):
        pairs.append(("training.packing", "on"))
    return Verdict("approximated" if notes else "mapped", pairs, "; ".join(notes))


def loss_rule(value: Any, _source) -> Verdict:
    name = component(value).rsplit(".", 1)[-1]
    if "CrossEntropy" in name or name.startswith("CE"):
        return Verdict("mapped", note="cross-entropy on the labels (chunking is only how it is computed)")
    if "DPO" in name or "IPO" in name or "SimPO" in name:
        return common.objective_verdict(name.removesuffix("Loss").lower() or "dpo", "loss")
    raise Refused(f"loss {name} is not available")


def optimizer_rule(value: Any, _source) -> Verdict:
    pairs = [("optim.name", common.optimizer(component(value))), ("optim.learning_rate", float(value["lr"])),
             ("optim.weight_decay", float(value.get("weight_decay", 0.01)))]
    if "betas" in value:
        pairs.append(("optim.betas", [float(b) for b in value["betas"]]))
    if "eps" in value:
        pairs.append(("optim.eps", float(value["eps"])))
    return mapped(*pairs)


def scheduler_rule(value: Any, _source) -> Verdict:
    return mapped(("optim.lr_scheduler", common.scheduler(component(value))),
                  ("optim.warmup_steps", int(value.get("num_warmup_steps", 0))))


def logger_rule(value: Any, _source) -> Verdict:
    name = component(value).rsplit(".", 1)[-1]
    known = {"WandBLogger": "wandb", "TensorBoardLogger": "tensorboard", "MLFlowLogger": "mlflow"}
    return mapped((f"logging.{known[name]}", True)) if name in known else Verdict("ignored", note=f"{name}: logging only")


def whole_file(source: dict[str, Any]) -> list[Outcome]:
    outcomes = []
    if source.get("clip_grad_norm") is None:
        outcomes.append(Outcome("clip_grad_norm", None, mapped(("optim.max_grad_norm", 0.0)), from_default=True))
    if source.get("lr_scheduler") is None:
        outcomes.append(Outcome("lr_scheduler", "constant", mapped(("optim.lr_scheduler", "constant"),
                                                                   ("optim.warmup_steps", 0)), from_default=True))
    if source.get("dataset_val") is None:
        outcomes.append(Outcome("dataset_val", None, mapped(("data.validation_split", 0.0)), from_default=True))
    return outcomes


def dialect(text: str) -> Dialect:
    downloads = {folder.rstrip("/"): repo for repo, folder in DOWNLOAD.findall(text)}
    rules = {**RULES, "model": model_rule(downloads)}
    return Dialect("torchtune recipe YAML", rules, {}, IGNORED, whole_file)


RULES = {
    "dataset": dataset_rule,
    "dataset_val": lambda v, _s: mapped(("data.validation_path", one_dataset(v)[0]["path"])),
    "loss": loss_rule,
    "optimizer": optimizer_rule,
    "lr_scheduler": scheduler_rule,
    "batch_size": lambda v, _s: mapped(("training.micro_batch_size", int(v))),
    "epochs": common.epochs_rule(),
    "max_steps_per_epoch": lambda v, s: approx([("training.num_batches", int(v) * int(s.get("epochs", 1)))],
                                               "epochs × max_steps_per_epoch optimizer steps in total"),
    "gradient_accumulation_steps": lambda v, _s: mapped(("training.gradient_accumulation_steps", int(v))),
    "clip_grad_norm": lambda v, _s: mapped(("optim.max_grad_norm", float(v))),
    "seed": lambda v, _s: mapped(("seed", int(v))),
    "device": lambda v, _s: mapped(("device", str(v))),
    "dtype": lambda v, _s: mapped(("training.precision", {"bf16": "bf16", "fp32": "fp32", "fp16": "fp16"}[str(v)])),
    "enable_activation_checkpointing": lambda v, _s: mapped(("training.gradient_checkpointing", switch(v))),
    "output_dir": common.output_dir,
    "log_every_n_steps": lambda v, _s: mapped(("training.log_interval_steps", int(v))),
    "run_val_every_n_steps": lambda v, _s: mapped(("training.eval_interval_steps", int(v))),
    "metric_logger": logger_rule,
    "tokenizer": lambda v, _s: mapped(("training.max_seq_length", int(v["max_seq_len"]))) if v.get("max_seq_len")
    else Verdict("ignored", note="the model's own tokenizer"),
    "resume_from_checkpoint": lambda v, _s: mapped(("training.resume", "auto")) if v else approx(
        [], "false: torchtune starts fresh; peftstudio's resume=auto continues only from this run's own complete "
            "checkpoints in training.checkpoint_dir (set training.resume=never to start over)"),
    "shuffle": lambda v, _s: Verdict("ignored", note="peftstudio shuffles too") if v
    else common.fail("shuffle: false trains in file order; peftstudio shuffles"),
    "optimizer_in_bwd": lambda v, _s: Verdict("ignored", note="off") if not v
    else common.fail("optimizer steps in the backward pass (no gradient accumulation)"),
    "teacher_model": lambda v, _s: common.fail("knowledge distillation is not available"),
    "datasets": lambda v, _s: common.fail("a weighted mix of datasets with their own transforms (the dev "
                                          "multi-dataset recipe) is not available"),
    "kd_loss": lambda v, _s: common.fail("knowledge distillation is not available"),
}
IGNORED = {key: "logging, checkpoint format or a speed/memory setting: the run computes the same" for key in (
    "checkpointer", "compile", "log_peak_memory_stats", "log_level", "enable_activation_offloading", "profiler",
    "save_adapter_weights_only", "batch_size_val", "low_cpu_ram", "dataloader", "kd_ratio", "teacher_checkpointer",
    "custom_sharded_layers", "fsdp_cpu_offload", "fsdp_reshard_after_forward", "tensor_parallel_dim", "cpu_offload")}
MARKERS = {"checkpointer", "tokenizer", "loss", "metric_logger"}
