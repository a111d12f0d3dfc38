"""Axolotl YAML → peftstudio. Defaults for omitted keys are Axolotl's own
(src/axolotl/utils/schemas/*.py: val_set_size 0.0, lora_dropout 0.0, weight_decay 0.0,
optimizer adamw_torch_fused, lr_scheduler cosine, micro_batch_size 1, sequence_len 512,
num_epochs 1, train_on_inputs false; lora_alpha unset means peft's 8, max_grad_norm unset
means transformers' 1.0)."""

from __future__ import annotations

from typing import Any

from peftstudio.config.importers import common, datasets
from peftstudio.config.importers.table import (Dialect, Outcome, Pairs, Refused, Verdict, approx, ignore, mapped,
                                               refuse, switch, to, when_set)

DEFAULTS = {"val_set_size": 0.0, "lora_dropout": 0.0, "lora_alpha": 8, "weight_decay": 0.0,
            "optimizer": "adamw_torch_fused", "lr_scheduler": "cosine", "micro_batch_size": 1,
            "gradient_accumulation_steps": 1, "sequence_len": 512, "num_epochs": 1, "train_on_inputs": False,
            "max_grad_norm": 1.0, "sample_packing": False, "seed": 42}

# Axolotl dataset `type` → peftstudio format, with the note when the prompt text differs.
ALPACA_NOTE = ("instruction records are rendered with the model's chat template, not Axolotl's Alpaca prompt text")
TYPES = {"alpaca": ("instruction", ALPACA_NOTE), "alpaca:chat": ("instruction", ALPACA_NOTE),
         "alpaca_chat": ("instruction", ALPACA_NOTE), "alpaca_chat.load_qa": ("instruction", ALPACA_NOTE),
         "sharegpt": ("sharegpt", ""), "completion": ("text", "")}


def adapter(value: Any, source: dict[str, Any]) -> Verdict:
    """adapter + load_in_4bit/8bit + peft_use_dora/rslora + LoftQ → one peft group and its flags."""
    if value not in ("lora", "qlora"):
        raise Refused(f"adapter {value!r}: peftstudio trains LoRA-family adapters only")
    if source.get("gptq"):
        raise Refused("a GPTQ-quantized base: peftstudio quantizes with bitsandbytes only")
    loftq = bool((source.get("peft") or {}).get("loftq_config"))
    quantized = value == "qlora" or bool(source.get("load_in_4bit")) or loftq or bool(source.get("load_in_8bit"))
    dora, rslora = bool(source.get("peft_use_dora")), bool(source.get("peft_use_rslora"))
    group = ("qdora" if dora else "qlora") if quantized else ("dora" if dora else "rslora" if rslora else "lora")
    pairs: Pairs = [("defaults.peft", group)]
    if rslora and group != "rslora":
        pairs.append(("peft.use_rslora", True))
    if source.get("load_in_8bit") and not (value == "qlora" or source.get("load_in_4bit") or loftq):
        pairs += [("peft.quantization", "int8"), ("peft.double_quant", False)]  # LoRA on an 8-bit base
    if loftq:
        pairs.append(("peft.init", "loftq"))
        return approx(pairs, "LoftQ: the base is stored in 4-bit NF4 (Axolotl keeps the dequantized weights in 16 bit); "
                             "the same quantized base and adapter start")
    return mapped(*pairs)


def part_of_adapter(value: Any, source: dict[str, Any]) -> Verdict:
    if source.get("adapter") in ("lora", "qlora"):
        return Verdict("mapped", note="folded into adapter")
    raise Refused("needs adapter: lora or qlora")


# Keys of an Axolotl dataset entry the conversion reads; any other one with a value is refused.
ENTRY_KEYS = {"path", "type", "split", "name", "revision", "data_files", "ds_type", "field_messages",
              "message_property_mappings", "message_field_role", "message_field_content", "roles", "roles_to_train",
              "train_on_eos", "chat_template", "field", "drop_system_message", "field_chosen", "field_rejected"}


def dataset_entry(entry: Any, source: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One Axolotl dataset → (peftstudio source, approximation note)."""
    if not isinstance(entry, dict) or not entry.get("path"):
        raise Refused(f"dataset {entry!r} has no path")
    path, kind = str(entry["path"]), entry.get("type")
    unread = sorted(key for key, value in entry.items() if key not in ENTRY_KEYS and value not in (None, False, "", []))
    if unread:
        raise Refused(f"dataset {path}: {', '.join(unread)} not read by peftstudio (e.g. a reasoning field the "
                      "template would render)")
    if entry.get("data_files"):
        files = entry["data_files"]
        if path not in ("json", "csv", "parquet") or not isinstance(files, str):
            raise Refused(f"dataset {path}: data_files {files!r} (peftstudio reads one file or hub id per source)")
        path = files
    for key in ("shards", "preprocess_shards", "conversation", "field_human", "field_model"):
        if entry.get(key):
            raise Refused(f"dataset {path}: {key} is not supported")
    out: dict[str, Any] = {"path": path, "split": entry.get("split"), "subset": entry.get("name"),
                           "revision": entry.get("revision"),
                           "system_message": "drop" if entry.get("drop_system_message") else "keep"}
    note = ""
    if isinstance(kind, dict):
        out["format"], note = "instruction", "custom prompt format: " + ALPACA_NOTE
        out["columns"] = {"instruction": kind.get("field_instruction", "instruction"),
                          "input": kind.get("field_input", "input"), "output": kind.get("field_output", "output")}
        out["columns"] = {k: v for k, v in out["columns"].items() if k != v}
    elif kind == "chat_template" or (kind is None and entry.get("field_messages")):
        out["format"], out["columns"] = chat_dataset(entry)
        note = "" if entry.get("train_on_eos") in (None, "turn") else "train_on_eos: peftstudio trains every assistant turn's end"
        if entry.get("train_on_eos") == "none":
            raise Refused(f"dataset {path}: train_on_eos none (the model would not learn to stop); peftstudio trains it")
    elif isinstance(kind, str) and "." in kind and source.get("rl"):
        out["format"], out["columns"], note = preference_type(path, kind, str(source["rl"]), entry)
    elif kind in TYPES:
        out["format"], note = TYPES[kind]
        if kind == "completion" and entry.get("field", "text") != "text":
            out["columns"] = {"text": entry["field"]}
    elif kind is None:
        out["format"] = "auto"
    else:
        raise Refused(f"dataset {path}: type {kind!r} has no peftstudio format")
    if entry.get("chat_template") and entry.get("chat_template") != source.get("chat_template", "tokenizer_default"):
        raise Refused(f"dataset {path}: its own chat_template {entry['chat_template']!r} differs from the run's")
    return datasets.clean(out), note


# Axolotl's DPO prompt strategies (`type: <template>.<strategy>`) whose records are strings:
# strategy -> peftstudio preference column -> the dataset's field, and what is not carried over.
PREFERENCE_FIELDS = {"intel": ({"prompt": "question", "chosen": "chosen", "rejected": "rejected"},
                               "its system column is not read"),
                     "argilla": ({"prompt": "instruction", "chosen": "chosen_response", "rejected": "rejected_response"}, ""),
                     "prompt_pairs": ({"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}, "")}


def preference_type(path: str, kind: str, rl: str, entry: dict[str, Any]) -> tuple[str, dict, str]:
    """An `rl: dpo|ipo|orpo` dataset type → (data.format, columns, note), or refused with why."""
    template, _, strategy = kind.partition(".")
    if rl not in ("dpo", "ipo", "orpo"):
        raise Refused(f"dataset {path}: type {kind!r} for rl {rl}: peftstudio maps preference (dpo/ipo/orpo) types only")
    if kind == "chat_template.default":
        # prompt turns in field_messages; chosen / rejected one {role, content} message each
        format_, _ = chat_dataset(entry)  # role/content keys and role names peftstudio reads, else refused
        if format_ != "chat":
            raise Refused(f"dataset {path}: {kind} with from/value turns; peftstudio reads preference turns as role/content")
        fields = {"prompt": entry.get("field_messages", "messages"), "chosen": entry.get("field_chosen", "chosen"),
                  "rejected": entry.get("field_rejected", "rejected")}
        return "auto", {k: v for k, v in fields.items() if k != v}, ""
    if strategy not in PREFERENCE_FIELDS:
        raise Refused(f"dataset {path}: type {kind!r}: its chosen/rejected are whole conversations or single message "
                      "objects; peftstudio reads prompt/chosen/rejected as text or lists of answer turns")
    fields, lost = PREFERENCE_FIELDS[strategy]
    note = f"{kind}: rendered with the run's chat template, not Axolotl's {template} prompt text" + (f"; {lost}" if lost else "")
    return "auto", {k: v for k, v in fields.items() if k != v}, note  # auto: the objective reads its own shape


def chat_dataset(entry: dict[str, Any]) -> tuple[str, dict]:
    properties = entry.get("message_property_mappings") or {}
    role = properties.get("role", entry.get("message_field_role", "role"))
    content = properties.get("content", entry.get("message_field_content", "content"))
    trained = entry.get("roles_to_train")
    if trained not in (None, ["assistant"], ["gpt"], ["assistant", "gpt"], ["gpt", "assistant"]):
        raise Refused(f"roles_to_train {trained}: peftstudio trains the assistant's turns")
    return datasets.conversation_source(entry.get("field_messages", "messages"), role, content, entry.get("roles"))


def datasets_rule(value: Any, source: dict[str, Any]) -> Verdict:
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise Refused("no dataset")
    converted = [dataset_entry(entry, source) for entry in entries]
    notes = sorted({note for _, note in converted if note})
    system = {s.pop("system_message") for s, _ in converted}
    if len(system) > 1:
        raise Refused("drop_system_message on some datasets only; peftstudio's data.system_message is one for the run")
    pairs = datasets.source_pairs([s for s, _ in converted])
    if system == {"drop"}:
        pairs.append(("data.system_message", "drop"))
    return Verdict("approximated" if notes else "mapped", pairs, "; ".join(notes))


def test_datasets(value: Any, source: dict[str, Any]) -> Verdict:
    entries = value if isinstance(value, list) else [value]
    if len(entries) != 1:
        raise Refused(f"{len(entries)} test datasets; peftstudio evaluates on one data.validation_path")
    entry, _ = dataset_entry(entries[0], source)
    return mapped(("data.validation_path", entry["path"]), note="evaluated in data.path's format and columns"
                  if {k: v for k, v in entry.items() if k not in ("path", "system_message")} else "")


def validation(value: Any, _source) -> Verdict:
    if float(value) >= 1:
        raise Refused(f"{value} rows: peftstudio's data.validation_split is a share below 1")
    return mapped(("data.validation_split", float(value)))


def per_epoch(key: str) -> Any:
    return lambda value, _s: mapped((key, int(value))) if float(value) == int(value) and value >= 1 else \
        approx([(key, max(int(round(float(value))), 1))], f"{value} rounded to a whole number per epoch")


def chat_template_rule(value: Any, source: dict[str, Any]) -> Verdict:
    if value == "jinja":
        return mapped(("data.chat_template", str(source.get("chat_template_jinja"))))
    return mapped(("data.chat_template", datasets.chat_template(value)))


def lora_targets(value: Any, source: dict[str, Any]) -> Verdict:
    if source.get("lora_target_linear"):
        return Verdict("mapped", note="lora_target_linear adds every linear layer to these: all-linear")
    names = [value] if isinstance(value, str) else list(value)
    if any(any(ch in name for ch in "*.[]()|") for name in names):
        raise Refused(f"target module pattern {value!r}: peftstudio takes module names")
    if "lm_head" in names and source.get("rl") and str(source["rl"]) != "orpo":
        raise Refused(f"lm_head with rl: {source['rl']}: TRL's trainer scores with its fused LM head, which reads the "
                      "base head alone, so an lm_head adapter would not train")
    return mapped(("peft.target_modules", names))


def whole_file(source: dict[str, Any]) -> list[Outcome]:
    """What no single key says: no `adapter` is a full fine-tune; `rl` absent is SFT."""
    outcomes = common.no_warmup_default(source, "warmup_steps", "warmup_ratio")
    if source.get("adapter") is None:
        outcomes.append(Outcome("adapter", None, Verdict(
            "refused", note="no adapter: a full fine-tune; peftstudio trains LoRA-family adapters only")))
    if source.get("rl") is None and not source.get("reward_model") and not source.get("process_reward_model"):
        outcomes.append(Outcome("rl", None, Verdict("mapped", note="absent: supervised fine-tuning (sft)")))
    return outcomes


def attention_flag(name: str) -> Any:
    return when_set(lambda _v, _s: mapped(("training.attention", name)))


RULES = {
    "base_model": to("model.name_or_path", common.model_name),
    "base_model_config": lambda v, s: Verdict("ignored", note="the same as base_model") if v == s.get("base_model")
    else common.fail("base_model_config differs from base_model"),
    "revision_of_model": to("model.revision", str),
    "adapter": adapter,
    "load_in_4bit": when_set(part_of_adapter),
    "load_in_8bit": when_set(part_of_adapter),
    "peft_use_dora": when_set(part_of_adapter),
    "peft_use_rslora": when_set(part_of_adapter),
    "peft": lambda v, s: part_of_adapter(v, s) if set(v) <= {"loftq_config"} else common.fail(f"peft {v}"),
    "gptq": when_set(refuse("a GPTQ-quantized base: peftstudio quantizes with bitsandbytes only")),
    "lora_model_dir": when_set(refuse("starts from an existing adapter; peftstudio starts a new one")),
    "lora_r": to("peft.r", int),
    "lora_alpha": to("peft.alpha", float),
    "lora_dropout": to("peft.dropout", float),
    "lora_target_modules": lora_targets,
    "lora_target_linear": when_set(lambda _v, _s: mapped(("peft.target_modules", "all-linear"))),
    "lora_modules_to_save": lambda v, s: common.fail(
        f"lora_modules_to_save {v} with rl: {s['rl']}: TRL's fused LM head scores with the base head alone, so "
        "the saved head would not train") if s.get("rl") and str(s["rl"]) != "orpo" else approx([("data.add_special_tokens", True)], (
        "peftstudio trains the whole embed_tokens/lm_head only when data.add_special_tokens=true adds the chat "
        "template's missing control tokens (what these are usually saved for); with no token to add they stay frozen"))
    if set(v) <= {"embed_tokens", "lm_head"} else common.fail(f"trains whole modules {v} beside the adapter"),
    "sequence_len": to("training.max_seq_length", int),
    "sample_packing": to("training.packing", switch),
    "micro_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_epochs": common.epochs_rule(),
    "max_steps": common.positive("training.num_batches"),
    "learning_rate": to("optim.learning_rate", float),
    "optimizer": common.optimizer_rule,
    "lr_scheduler": common.scheduler_rule,
    "warmup_steps": common.positive("optim.warmup_steps"),
    "warmup_ratio": common.positive("optim.warmup_ratio", float),
    "weight_decay": to("optim.weight_decay", float),
    "max_grad_norm": to("optim.max_grad_norm", float),
    "adam_beta1": lambda v, s: mapped(("optim.betas", [float(v), float(s.get("adam_beta2") or 0.999)])),
    "adam_beta2": lambda v, s: mapped(("optim.betas", [float(s.get("adam_beta1") or 0.9), float(v)])),
    "adam_epsilon": to("optim.eps", float),
    "adam_eps": to("optim.eps", float),
    "bf16": common.precision_rule(),
    "fp16": common.precision_rule(),
    "bfloat16": when_set(lambda _v, _s: mapped(("training.precision", "bf16"))),
    "float16": when_set(lambda _v, _s: mapped(("training.precision", "fp16"))),
    "tf32": ignore("TF32 matmuls on Ampere+ GPUs: PyTorch's setting is left as it is"),
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "flash_attention": attention_flag("flash_attention_2"),
    "sdp_attention": attention_flag("sdpa"),
    "attn_implementation": common.attention_rule,
    "output_dir": common.output_dir,
    "val_set_size": validation,
    "datasets": datasets_rule,
    "test_datasets": test_datasets,
    "chat_template": chat_template_rule,
    "chat_template_jinja": lambda v, s: Verdict("mapped", note="with chat_template: jinja") if s.get("chat_template")
    == "jinja" else Verdict("ignored", note="chat_template is not jinja"),
    "train_on_inputs": lambda v, _s: mapped(("training.loss_on", "all" if v else "completion")),
    "rl": lambda v, _s: common.objective_verdict(v, "rl"),
    "logging_steps": to("training.log_interval_steps", int),
    "save_steps": common.positive("training.save_interval_steps"),
    "eval_steps": common.positive("training.eval_interval_steps"),
    "evals_per_epoch": per_epoch("training.evals_per_epoch"),
    "saves_per_epoch": per_epoch("training.saves_per_epoch"),
    "save_total_limit": common.positive("training.save_total_limit"),
    "early_stopping_patience": common.positive("training.early_stopping_patience"),
    "seed": to("seed", int),
    "resume_from_checkpoint": when_set(lambda v, _s: mapped(("training.resume", str(v)))),
    "auto_resume_from_checkpoints": when_set(lambda _v, _s: mapped(("training.resume", "auto"))),
    "wandb_project": when_set(lambda v, _s: mapped(("logging.wandb", True), ("logging.wandb_project", str(v)))),
    "use_tensorboard": when_set(lambda _v, _s: mapped(("logging.tensorboard", True))),
    "use_mlflow": when_set(lambda _v, _s: mapped(("logging.mlflow", True))),
    "mlflow_tracking_uri": when_set(lambda v, _s: mapped(("logging.mlflow", True), ("logging.mlflow_tracking_uri", str(v)))),
    "mlflow_experiment_name": when_set(lambda v, _s: mapped(("logging.mlflow_experiment", str(v)))),
    "trust_remote_code": to("model.trust_remote_code", bool),
    "deepspeed": when_set(lambda v, _s: common.distributed("deepspeed", v)),
    "fsdp": when_set(lambda v, _s: common.distributed("fsdp", v)),
    "fsdp_config": when_set(lambda v, s: Verdict("approximated", note="with fsdp: peftstudio's own FSDP settings")
                            if s.get("fsdp") or s.get("fsdp_version") else common.distributed("fsdp", v)),
    "fsdp_version": when_set(lambda v, _s: Verdict("approximated", note="peftstudio picks the FSDP version accelerate runs")),
    "special_tokens": lambda v, _s: approx([], "pad/eos tokens: peftstudio keeps the tokenizer's own, replacing a pad "
                                              "equal to EOS (the padding is masked from the loss either way)")
    if set(v) <= {"pad_token", "eos_token", "bos_token", "unk_token"} else common.fail(f"adds tokens {sorted(v)}"),
    "eot_tokens": lambda _v, _s: approx([], "end-of-turn tokens: peftstudio trains the chat template's own"),
    "unfrozen_parameters": when_set(refuse("trains base-model parameters beside the adapter")),
    "relora": when_set(refuse("ReLoRA restarts are not available")),
    "pretraining_dataset": refuse("streaming pretraining data is not available"),
    "streaming": when_set(refuse("streaming datasets are not available")),
    "model_quantization_config": refuse("a torchao/fp8 quantization config: peftstudio quantizes with bitsandbytes"),
    "reward_model": when_set(refuse("reward-model training is not available")),
    "process_reward_model": when_set(refuse("process-reward-model training is not available")),
    "orpo_alpha": lambda v, s: common.objective_setting("orpo", "beta", v, "orpo_alpha"),
    "rl_beta": lambda v, s: common.objective_setting(s.get("rl", "dpo"), "beta", v, "rl_beta"),
    "kto_desirable_weight": lambda v, s: common.objective_setting("kto", "desirable_weight", v, "kto_desirable_weight"),
    "kto_undesirable_weight": lambda v, s: common.objective_setting("kto", "undesirable_weight", v,
                                                                    "kto_undesirable_weight"),
    "context_parallel_size": lambda v, _s: Verdict("ignored", note="1: no context parallelism") if v == 1
    else common.fail("context parallelism is not available"),
    "tensor_parallel_size": lambda v, _s: Verdict("ignored", note="1: no tensor parallelism") if v == 1
    else common.fail("tensor parallelism is not available"),
    "max_packed_sequence_len": refuse("packing to a different length than sequence_len"),
    "min_sample_len": refuse("drops samples shorter than a length"),
    "dataset_exact_deduplication": when_set(refuse("deduplicates the data")),
    "lr_quadratic_warmup": when_set(refuse("quadratic warmup is not available")),
    "jagged_restart_steps": refuse("jagged LR restarts are not available"),
    "model_type": ignore("the model class: transformers reads it from the model's config"),
    # multimodal (Axolotl's beta): image parts in chat messages, as peftstudio reads them
    "processor_type": lambda v, _s: Verdict("mapped", note="peftstudio loads the model's processor (AutoProcessor) "
                                            "whenever the data has images") if v == "AutoProcessor"
    else common.fail(f"processor_type {v}: peftstudio loads the model's AutoProcessor"),
    "skip_prepare_dataset": ignore("Axolotl then tokenizes in its collator (multimodal): the same computation"),
    "image_size": refuse("Axolotl resizes images to image_size before the processor; peftstudio gives the model's "
                         "processor the images as they are: resize them beforehand"),
    "image_resize_algorithm": refuse("a resizing peftstudio does not do (see image_size)"),
    "tokenizer_type": ignore("the tokenizer class: transformers reads it from the model"),
}
RULES["loss_watchdog_threshold"] = lambda _v, _s: approx(
    [], "peftstudio's watchdog stops on NaN/inf loss (training.nan_patience), not above a threshold; it only stops a run")
RULES["loss_watchdog_patience"] = RULES["loss_watchdog_threshold"]

IGNORED = {key: "logging, hub upload or preprocessing cache: the run computes the same" for key in (
    "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id", "dataset_prepared_path",
    "push_dataset_to_hub", "hub_model_id", "hf_use_auth_token", "trackio_project_name", "trackio_run_name",
    "trackio_space_id", "strict", "debug", "dataset_processes", "dataloader_num_workers", "torchdistx_path",
    "eval_table_size", "eval_max_new_tokens", "do_causal_lm_eval", "eval_causal_lm_metrics", "profiler_steps",
    "gc_steps", "include_tokens_per_second", "save_safetensors", "save_strategy", "logging_strategy")}
IGNORED.update({key: "a speed or memory kernel: the same computation" for key in (
    "plugins", "liger_rope", "liger_rms_norm", "liger_glu_activation", "liger_layer_norm", "liger_fused_linear_cross_entropy",
    "cut_cross_entropy", "use_kernels", "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "flash_attn_cross_entropy",
    "flash_attn_fuse_mlp", "flash_attn_rms_norm", "flash_optimum", "fused_attn_kernel", "tiled_mlp", "use_scattermoe",
    "use_sonicmoe", "experimental_skip_move_to_device", "low_cpu_mem_usage", "activation_offloading",
    "gradient_checkpointing_kwargs", "ddp_find_unused_parameters", "torch_compile", "eval_sample_packing",
    "pad_to_sequence_len", "remove_unused_columns", "shuffle_merged_datasets", "resize_token_embeddings_to_32x",
    "tokenizer_use_fast", "tokenizer_legacy", "tokenizer_use_mistral_common", "eval_batch_size", "accelerator_config",
    "dp_shard_size", "dp_replicate_size", "streaming_multipack_buffer_size", "gptq_groupsize", "gptq_model_v1",
    "gptq_disable_exllama", "quantize_moe_experts", "model_quantization_config_kwargs", "relora_prune_ratio",
    "relora_cpu_offload", "jagged_restart_warmup_steps", "jagged_restart_anneal_steps", "use_onebitllms",
    "group_by_length")})
# A few of those only matter with a feature that is refused on its own key (gptq, relora, jagged restarts).

DIALECT = Dialect("Axolotl YAML", RULES, DEFAULTS, IGNORED, whole_file)
MARKERS = {"base_model", "adapter", "lora_r", "sequence_len", "datasets", "micro_batch_size", "val_set_size"}
