"""HF TrainingArguments / TRL SFTConfig JSON (what `args.to_json_string()` writes) and the TRL
CLI / alignment-handbook YAML (the same training arguments plus TRL's ModelConfig and
ScriptArguments: model_name_or_path, use_peft, lora_*, dataset_name, dataset_mixture)."""

from __future__ import annotations

from typing import Any

from peftstudio.config.importers import common, datasets
from peftstudio.config.importers.table import (Dialect, Outcome, Refused, Verdict, approx, ignore, mapped, refuse,
                                               switch, to, when_set)

# transformers TrainingArguments / TRL SFTConfig defaults for keys a YAML omits (a JSON dump has them all).
TRL_DEFAULTS = {"learning_rate": 2e-5, "weight_decay": 0.0, "per_device_train_batch_size": 8, "num_train_epochs": 3,
                "lr_scheduler_type": "linear", "max_grad_norm": 1.0, "seed": 42, "max_length": 1024,
                "gradient_accumulation_steps": 1, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                "packing": False}


def warmup_steps(value: Any, _source) -> Verdict:
    if 0 < float(value) < 1:  # transformers 5 reads a fraction as a ratio of the run
        return mapped(("optim.warmup_ratio", float(value)))
    return mapped(("optim.warmup_steps", int(value)))


def epochs(value: Any, source: dict[str, Any]) -> Verdict:
    if (source.get("max_steps") or -1) > 0:
        return Verdict("ignored", note="max_steps is set and decides the run length, as in transformers")
    return mapped(("training.num_epochs", common.whole_epochs(value)))


def interval(key: str) -> Any:
    def rule(value, _source):
        if isinstance(value, float) and value < 1:
            raise Refused(f"{value}: a fraction of the run; peftstudio wants whole steps in {key}")
        return mapped((key, int(value)))
    return rule


def steps_strategy(value: Any, _source) -> Verdict:
    name = str(value).lower().removeprefix("intervalstrategy.").removeprefix("savestrategy.")
    if name in ("steps", "no"):
        return Verdict("ignored", note=f"{name}: peftstudio schedules by steps")
    if name == "epoch":
        return approx([], "once per epoch: set with training.evals_per_epoch / saves_per_epoch below when mapped")
    raise Refused(f"strategy {value!r}: peftstudio schedules by steps")


def save_strategy(value: Any, source: dict[str, Any]) -> Verdict:
    name = str(value).lower().removeprefix("savestrategy.")
    if name == "epoch":
        return mapped(("training.saves_per_epoch", 1))
    if name == "no":
        return approx([], "no checkpoints: peftstudio still saves every training.save_interval_steps (it only costs disk)")
    return steps_strategy(value, source)


def eval_strategy(value: Any, source: dict[str, Any]) -> Verdict:
    name = str(value).lower().removeprefix("intervalstrategy.")
    if name == "epoch":
        return mapped(("training.evals_per_epoch", 1))
    if name == "no":
        return Verdict("ignored", note="no evaluation during training")
    return steps_strategy(value, source)


def loss_on_completion(value: Any, _source) -> Verdict:
    return mapped(("training.loss_on", "completion" if value else "all"))


def best_metric(value: Any) -> str:
    return "eval_" + str(value).removeprefix("eval_")


def peft_rule(value: Any, source: dict[str, Any]) -> Verdict:
    if not value:
        return Verdict("ignored", note="false: see the full fine-tune refusal")
    quantized = source.get("load_in_4bit") or source.get("load_in_8bit")
    group = "qlora" if quantized else "lora"
    dora = source.get("use_dora")
    if dora:
        group = "qdora" if group == "qlora" else "dora"
    pairs = [("defaults.peft", group)]
    if source.get("load_in_8bit"):
        pairs += [("peft.quantization", "int8"), ("peft.double_quant", False)]
    if source.get("use_rslora"):
        pairs.append(("peft.use_rslora", True))
    if source.get("bnb_4bit_quant_type", "nf4") != "nf4" and quantized:
        pairs.append(("peft.quantization", str(source["bnb_4bit_quant_type"])))
    if source.get("use_bnb_nested_quant") is False and source.get("load_in_4bit"):
        pairs.append(("peft.double_quant", False))
    return mapped(*pairs)


def lora_targets(value: Any, _source) -> Verdict:
    names = [value] if isinstance(value, str) else list(value)
    return mapped(("peft.target_modules", "all-linear" if names == ["all-linear"] else names))


def dataset_mixture(value: Any, source: dict[str, Any]) -> Verdict:
    entries = value.get("datasets") if isinstance(value, dict) else None
    if not entries:
        raise Refused("dataset_mixture without datasets")
    sources = []
    for entry in entries:
        if float(entry.get("weight", 1.0)) != 1.0:
            raise Refused(f"dataset {entry.get('id')}: weight {entry['weight']} subsamples it; peftstudio reads whole sources")
        sources.append(datasets.clean({"path": str(entry["id"]), "subset": entry.get("config"),
                                       "split": entry.get("split", "train")}))
    pairs = datasets.source_pairs(sources)
    split = value.get("test_split_size")
    if split is not None:
        if not 0 <= float(split) < 1:
            raise Refused(f"test_split_size {split}: peftstudio's data.validation_split is a share below 1")
        pairs.append(("data.validation_split", float(split)))
    return mapped(*pairs)


def dataset_mixer(value: Any, source: dict[str, Any]) -> Verdict:
    if not isinstance(value, dict) or not value:
        raise Refused("dataset_mixer is not a mapping of dataset → fraction")
    if any(float(share) != 1.0 for share in value.values()):
        raise Refused(f"fractions {list(value.values())} subsample the datasets; peftstudio reads whole sources")
    splits = [s for s in source.get("dataset_splits") or ["train"] if "train" in s]
    if len(splits) != 1:
        raise Refused(f"dataset_splits {source.get('dataset_splits')}: peftstudio trains on one split per source")
    return mapped(*datasets.source_pairs([{"path": str(name), "split": splits[0]} for name in value]))


def dataset_name(value: Any, source: dict[str, Any]) -> Verdict:
    return mapped(*datasets.source_pairs([datasets.clean({"path": str(value), "subset": source.get("dataset_config"),
                                                          "split": source.get("dataset_train_split", "train")})]))


def objective_from(key: str) -> Any:
    """DPO-family keys (beta, loss_type, max_prompt_length) say the objective."""
    def rule(value, source):
        loss = source.get("loss_type") if key != "loss_type" else value
        name = loss if isinstance(loss, str) else "dpo"
        if key == "beta":
            return common.objective_setting(name, "beta", value, key)
        return common.objective_verdict(name, key)
    return rule


def loss_default(source: dict[str, Any]) -> list[Outcome]:
    """TRL trains on every token of conversational data unless assistant_only_loss (and on the
    completion of prompt/completion data); peftstudio's default is the answer only."""
    if source.get("assistant_only_loss") or source.get("completion_only_loss") is not None:
        return []
    return [Outcome("assistant_only_loss", False, approx([("training.loss_on", "all")], (
        "TRL's default: every token of conversational data is trained (prompt/completion data: "
        "the completion only, which peftstudio's training.loss_on=completion gives)")), from_default=True)]


def whole_file(source: dict[str, Any]) -> list[Outcome]:
    outcomes = common.no_warmup_default(source, "warmup_steps", "warmup_ratio") + loss_default(source)
    if "model_name_or_path" in source and not source.get("use_peft"):
        outcomes.append(Outcome("use_peft", source.get("use_peft"), Verdict(
            "refused", note="no use_peft: a full fine-tune; peftstudio trains LoRA-family adapters only")))
    elif source.get("use_peft") and not source.get("lora_target_modules"):
        outcomes.append(Outcome("lora_target_modules", None, Verdict(
            "refused", note="not set: peft picks per-architecture defaults (q_proj, v_proj for Llama) that "
                            "peftstudio cannot know offline; name the modules, or all-linear")))
    return outcomes


RULES = {
    "output_dir": common.output_dir,
    "per_device_train_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_train_epochs": epochs,
    "max_steps": common.positive("training.num_batches"),
    "learning_rate": to("optim.learning_rate", float),
    "weight_decay": to("optim.weight_decay", float),
    "adam_beta1": lambda v, s: mapped(("optim.betas", [float(v), float(s.get("adam_beta2", 0.999))])),
    "adam_beta2": lambda v, s: mapped(("optim.betas", [float(s.get("adam_beta1", 0.9)), float(v)])),
    "adam_epsilon": to("optim.eps", float),
    "max_grad_norm": to("optim.max_grad_norm", float),
    "lr_scheduler_type": common.scheduler_rule,
    "lr_scheduler_kwargs": when_set(refuse("scheduler arguments (such as min_lr_rate) change the schedule")),
    "warmup_ratio": to("optim.warmup_ratio", float),
    "warmup_steps": warmup_steps,
    "optim": common.optimizer_rule,
    "seed": to("seed", int),
    "data_seed": to("data.shuffle_seed", int),
    "bf16": common.precision_rule(),
    "fp16": common.precision_rule(),
    "use_cpu": when_set(lambda _v, _s: mapped(("device", "cpu"))),
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "logging_steps": interval("training.log_interval_steps"),
    "save_steps": interval("training.save_interval_steps"),
    "eval_steps": interval("training.eval_interval_steps"),
    "save_total_limit": common.positive("training.save_total_limit"),
    "metric_for_best_model": to("training.metric_for_best_model", best_metric),
    "max_length": common.positive("training.max_seq_length"),
    "max_seq_length": common.positive("training.max_seq_length"),
    "packing": to("training.packing", switch),
    "padding_free": when_set(lambda _v, _s: mapped(("training.packing", "on"),
                                                   note="padding-free batches: peftstudio's packing keeps samples apart")),
    "completion_only_loss": loss_on_completion,
    "assistant_only_loss": when_set(lambda _v, _s: mapped(("training.loss_on", "completion"))),
    "resume_from_checkpoint": when_set(lambda v, _s: mapped(("training.resume", str(v)))),
    "report_to": common.trackers,
    "logging_strategy": steps_strategy,
    "save_strategy": save_strategy,
    "eval_strategy": eval_strategy,
    "evaluation_strategy": eval_strategy,
    "early_stopping_patience": common.positive("training.early_stopping_patience"),
    # TRL ModelConfig / ScriptArguments (CLI and alignment-handbook YAML)
    "model_name_or_path": to("model.name_or_path", common.model_name),
    "model_revision": when_set(lambda v, _s: mapped(("model.revision", str(v))) if v != "main"
                               else Verdict("ignored", note="main is the default branch")),
    "trust_remote_code": to("model.trust_remote_code", bool),
    "attn_implementation": common.attention_rule,
    "torch_dtype": lambda v, _s: approx([], f"{v}: peftstudio loads the base at training.precision (bf16 here)"),
    "dtype": lambda v, _s: approx([], f"{v}: peftstudio loads the base at training.precision"),
    "use_peft": peft_rule,
    "load_in_4bit": when_set(lambda v, s: Verdict("mapped", note="folded into use_peft") if s.get("use_peft")
                             else common.fail("needs use_peft")),
    "load_in_8bit": when_set(lambda v, s: Verdict("mapped", note="folded into use_peft") if s.get("use_peft")
                             else common.fail("needs use_peft")),
    "use_dora": when_set(lambda v, s: Verdict("mapped", note="folded into use_peft")),
    "use_rslora": when_set(lambda v, s: Verdict("mapped", note="folded into use_peft")),
    "bnb_4bit_quant_type": lambda v, s: Verdict("mapped", note="folded into use_peft"),
    "use_bnb_nested_quant": lambda v, s: Verdict("mapped", note="folded into use_peft"),
    "lora_r": to("peft.r", int),
    "lora_alpha": to("peft.alpha", float),
    "lora_dropout": to("peft.dropout", float),
    "lora_target_modules": lora_targets,
    "lora_modules_to_save": when_set(refuse("peftstudio trains adapter weights only (no fully trained modules_to_save)")),
    "dataset_name": dataset_name,
    "dataset_config": lambda v, s: Verdict("mapped", note="with dataset_name"),
    "dataset_train_split": lambda v, s: Verdict("mapped", note="with dataset_name"),
    "dataset_test_split": lambda v, s: Verdict("ignored", note="peftstudio holds out data.validation_split of the train split"),
    "dataset_mixture": dataset_mixture,
    "dataset_mixer": dataset_mixer,
    "dataset_splits": lambda v, s: Verdict("mapped", note="with dataset_mixer"),
    "dataset_text_field": lambda v, _s: mapped(("data.format", "text"), ("data.columns", {"text": str(v)}))
    if v != "text" else mapped(("data.format", "text")),
    "chat_template": lambda v, _s: mapped(("data.chat_template", str(v))),
    "eos_token": lambda v, _s: approx([], f"{v}: peftstudio ends each assistant turn with the chat template's own token"),
    "beta": objective_from("beta"),
    "loss_type": objective_from("loss_type"),
    "max_prompt_length": objective_from("max_prompt_length"),
    "dataset_kwargs": lambda v, _s: Verdict("ignored", note="dataset preparation flags") if set(v) <= {
        "skip_prepare_dataset", "add_special_tokens", "append_concat_token"} else common.fail(f"dataset_kwargs {v}"),
    "use_liger_kernel": ignore("a speed kernel: the same computation"),
    "load_best_model_at_end": lambda v, _s: approx([], "peftstudio keeps the best checkpoint "
                                                       "(training.metric_for_best_model) and saves the final adapter"),
    "per_device_eval_batch_size": ignore("evaluation batch size: the same evaluation loss"),
    "do_train": ignore("peftstudio always trains"),
    "pad_token": lambda v, _s: approx([], f"{v}: peftstudio keeps the tokenizer's pad token, replacing one equal to EOS "
                                          "(padding is masked from the loss either way)"),
    "activation_checkpointing": ignore("a memory setting (recompute activations): the same computation"),
    "accelerator_config": ignore("accelerate's dataloader setup: the same batches"),
}

IGNORED = {key: "logging, hub upload or process setup: the run computes the same" for key in (
    "do_eval", "do_predict", "overwrite_output_dir", "logging_dir", "logging_first_step", "log_level", "log_level_replica",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_model_revision", "hub_token", "run_name",
    "dataset_num_proc", "dataloader_num_workers", "dataloader_pin_memory", "ddp_timeout", "remove_unused_columns",
    "gradient_checkpointing_kwargs", "average_tokens_across_devices", "packing_strategy", "disable_tqdm",
    "save_safetensors", "save_only_model", "logging_nan_inf_filter", "include_tokens_per_second", "torch_compile",
    "tf32", "ddp_find_unused_parameters", "local_rank", "report_to_all")}

TRL_DIALECT = Dialect("TRL / alignment-handbook YAML", RULES, TRL_DEFAULTS, IGNORED, whole_file)
def sft_config_default(key: str) -> Any:
    """TRL SFTConfig's default for `key` (transformers TrainingArguments' for the inherited ones),
    as its JSON dump writes it."""
    import dataclasses

    from trl import SFTConfig

    found = {f.name: f for f in dataclasses.fields(SFTConfig)}.get(key)
    if found is None or found.default is dataclasses.MISSING:
        return dataclasses.MISSING
    default = found.default
    return getattr(default, "value", default)  # enums are dumped as their value


HF_DIALECT = Dialect("HF TrainingArguments / SFTConfig JSON", RULES, {}, IGNORED,
                     lambda source: common.no_warmup_default(source, "warmup_steps", "warmup_ratio")
                     + (loss_default(source) if "completion_only_loss" in source else []),
                     default_of=sft_config_default)
HF_MARKERS = {"per_device_train_batch_size", "num_train_epochs", "logging_steps", "gradient_accumulation_steps"}
