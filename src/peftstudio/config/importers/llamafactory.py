"""LLaMA-Factory training YAML → peftstudio. `dataset:` names entries of a dataset_info.json
(given with `--dataset-info`); without it the datasets cannot be known and the key is refused.
Defaults for omitted keys are LLaMA-Factory's (hparams/finetuning_args.py, data_args.py:
lora_rank 8, lora_alpha 2×rank, lora_dropout 0, lora_target all, cutoff_len 2048, val_size 0)
and transformers' TrainingArguments' (learning_rate 5e-5, 3 epochs, batch 8, linear, no warmup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftstudio.config.importers import common, datasets, hf
from peftstudio.config.importers.table import (Dialect, Outcome, Refused, Rule, Verdict, approx, ignore, mapped, refuse,
                                               switch, to)

DEFAULTS = {"lora_rank": 8, "lora_dropout": 0.0, "lora_target": "all", "cutoff_len": 2048, "val_size": 0.0,
            "learning_rate": 5e-5, "weight_decay": 0.0, "per_device_train_batch_size": 8, "num_train_epochs": 3,
            "lr_scheduler_type": "linear", "max_grad_norm": 1.0, "seed": 42, "gradient_accumulation_steps": 1}
STAGES = {"sft": "sft", "pt": "sft", "dpo": "dpo", "kto": "kto", "ppo": "ppo", "orpo": "orpo"}


def finetuning(value: Any, source: dict[str, Any]) -> Verdict:
    if value != "lora":
        raise Refused(f"finetuning_type {value}: peftstudio trains LoRA-family adapters only")
    bits = source.get("quantization_bit")
    group = {None: "lora", 4: "qlora", 8: "qlora"}.get(bits)
    if group is None:
        raise Refused(f"quantization_bit {bits}: peftstudio quantizes to 4 or 8 bits with bitsandbytes")
    if source.get("use_dora"):
        group = "qdora" if group == "qlora" else "dora"
    elif source.get("pissa_init"):
        group = "pissa" if group == "lora" else common.fail("pissa_init on a quantized base")
    pairs = [("defaults.peft", group)]
    if bits == 8:
        pairs += [("peft.quantization", "int8"), ("peft.double_quant", False)]
    if bits == 4:
        pairs.append(("peft.quantization", str(source.get("quantization_type", "nf4"))))
        pairs.append(("peft.double_quant", bool(source.get("double_quantization", True))))
    if source.get("use_rslora"):
        pairs.append(("peft.use_rslora", True))
    return mapped(*pairs)


def stage(value: Any, source: dict[str, Any]) -> Verdict:
    if value == "rm":
        raise Refused("reward-model training is not available")
    if value not in STAGES:
        raise Refused(f"stage {value!r} is not available")
    verdict = common.objective_verdict(STAGES[value], "stage")
    if value == "pt":
        verdict.pairs.append(("training.loss_on", "all"))
    return verdict


def targets(value: Any, _source) -> Verdict:
    names = [name.strip() for name in str(value).split(",")]
    return mapped(("peft.target_modules", "all-linear" if names == ["all"] else names))


def template(value: Any, _source) -> Verdict:
    if value in ("default", "empty", "alpaca", "vicuna"):
        raise Refused(f"template {value!r} is a prompt format of LLaMA-Factory's own; "
                      "set data.chat_template to its Jinja text")
    return approx([], f"{value} is LLaMA-Factory's copy of the model's chat template; peftstudio uses the "
                      "tokenizer's own")


def info_entry(name: str, info: dict[str, Any], folder: Path, stage_name: str) -> dict[str, Any]:
    """One dataset_info.json entry → a peftstudio source."""
    entry = info.get(name)
    if entry is None:
        raise Refused(f"dataset {name!r} is not in the dataset_info.json given")
    columns = dict(entry.get("columns") or {})
    if entry.get("ranking") or {"chosen", "rejected", "kto_tag"} & set(columns):
        return preference_entry(name, entry, columns, folder, stage_name)
    extra = {"videos", "audios", "tools", "system", "history"} & set(columns)
    if extra:
        raise Refused(f"dataset {name}: columns {sorted(extra)} are not read by peftstudio")
    if "images" in columns:
        image_column(name, entry, columns["images"])
    if entry.get("hf_hub_url"):
        path = str(entry["hf_hub_url"])
    elif entry.get("file_name"):
        path = str(folder / entry["file_name"])
    else:
        raise Refused(f"dataset {name}: only hf_hub_url and file_name sources are read")
    out = {"path": path, "subset": entry.get("subset"), "split": entry.get("split", "train")}
    if entry.get("formatting", "alpaca") == "alpaca":
        if stage_name == "pt":
            out.update(format="text", columns={"text": columns.get("prompt", "text")})
        else:
            names = {"instruction": columns.get("prompt", "instruction"), "input": columns.get("query", "input"),
                     "output": columns.get("response", "output")}
            out.update(format="instruction", columns={k: v for k, v in names.items() if k != v})
    else:
        tags = entry.get("tags") or {}
        roles = {"user": [tags.get("user_tag", "human")], "assistant": [tags.get("assistant_tag", "gpt")]}
        out["format"], out["columns"] = datasets.conversation_source(
            columns.get("messages", "conversations"), tags.get("role_tag", "from"), tags.get("content_tag", "value"), roles)
    return datasets.clean(out)


def image_column(name: str, entry: dict[str, Any], column: str) -> None:
    """An `images` column is read by peftstudio as LLaMA-Factory reads it (`<image>` placeholders,
    one per image, in order) when it is named `images` and its relative paths resolve the same:
    LLaMA-Factory resolves them against media_dir (default: dataset_dir), peftstudio against the
    data file's folder, the same folder when the file sits at the top of dataset_dir."""
    if column != "images":
        raise Refused(f"dataset {name}: the images column is {column!r}; peftstudio reads a column named images "
                      "(rename it in the data)")
    if entry.get("hf_hub_url") or "/" in str(entry.get("file_name", "")).replace("\\", "/"):
        raise Refused(f"dataset {name}: image paths are relative to LLaMA-Factory's media_dir, peftstudio's to the "
                      "data file's folder, which differ here (move the data file to the top of dataset_dir)")


def image_setting(key: str) -> Rule:
    """LLaMA-Factory's image knobs: kept where peftstudio computes the same, refused otherwise."""
    def rule(value: Any, source: dict[str, Any]) -> Verdict:
        if key == "freeze_vision_tower":
            return mapped(("peft.target_scope", "language" if value else "all"))
        if key == "freeze_multi_modal_projector" and value:
            return Verdict("mapped", note="peftstudio never trains the projector")
        if key == "freeze_language_model" and not value:
            return Verdict("mapped", note="the language model gets adapters (peft.target_scope)")
        if key == "media_dir":
            raise Refused("image paths resolve against the data file's folder in peftstudio; move the images there")
        raise Refused({"freeze_multi_modal_projector": "trains the projector, which peftstudio keeps frozen",
                       "freeze_language_model": "LoRA on the vision tower only is peft.target_scope=vision; set it",
                       }.get(key, f"{key}: LLaMA-Factory resizes images (or videos) before the processor; peftstudio "
                                  "gives the model's processor the images as they are: resize them beforehand"))
    return rule


def preference_entry(name: str, entry: dict[str, Any], columns: dict[str, str], folder: Path, stage_name: str) -> dict[str, Any]:
    """A `ranking: true` (dpo / orpo) or kto_tag (kto) dataset in alpaca formatting → a
    preference or kto source; sharegpt ones (chosen/rejected as single from/value messages) and a
    query column (LLaMA-Factory joins it to the prompt) are refused."""
    kto = "kto_tag" in columns
    wanted = "kto" if kto else ("dpo", "orpo")
    if stage_name not in wanted:
        raise Refused(f"dataset {name}: a {'kto' if kto else 'preference (ranking)'} dataset with stage {stage_name}")
    if entry.get("formatting", "alpaca") != "alpaca":
        raise Refused(f"dataset {name}: sharegpt preference data holds chosen/rejected as single from/value messages; "
                      "peftstudio reads them as text or lists of role/content answer turns")
    if columns.get("query") or columns.get("history") or columns.get("system"):
        raise Refused(f"dataset {name}: query/history/system columns are joined into the prompt by LLaMA-Factory; "
                      "peftstudio's preference prompt is one column")
    if not entry.get("file_name") and not entry.get("hf_hub_url"):
        raise Refused(f"dataset {name}: only hf_hub_url and file_name sources are read")
    path = str(entry["hf_hub_url"]) if entry.get("hf_hub_url") else str(folder / entry["file_name"])
    names = {"prompt": columns.get("prompt", "instruction")}
    if kto:
        names.update(completion=columns.get("response", "output"), label=columns["kto_tag"])
    else:
        names.update(chosen=columns.get("chosen", "chosen"), rejected=columns.get("rejected", "rejected"))
    out = {"path": path, "subset": entry.get("subset"), "split": entry.get("split", "train"),
           # data.format stays auto: the objective reads its own shape (data/objective_data.py)
           "columns": {k: v for k, v in names.items() if k != v}}
    return datasets.clean(out)


def dialect(dataset_info: Path | None) -> Dialect:
    """The LLaMA-Factory rules, reading datasets from `dataset_info` when given."""
    import json

    info = json.loads(dataset_info.read_text(encoding="utf-8")) if dataset_info else None

    def dataset(value: Any, source: dict[str, Any]) -> Verdict:
        if info is None:
            raise Refused("names entries of LLaMA-Factory's dataset_info.json; pass it with --dataset-info PATH")
        folder = Path(source["dataset_dir"]) if source.get("dataset_dir") else dataset_info.parent
        names = [n.strip() for n in str(value).split(",") if n.strip()]
        sources = [info_entry(name, info, folder, str(source.get("stage", "sft"))) for name in names]
        note = "instruction records are rendered with the chat template" if any(
            s.get("format") == "instruction" for s in sources) else ""
        if any("images" in (info[n].get("columns") or {}) for n in names) and "image_max_pixels" not in source:
            note = "; ".join(filter(None, [note, "images column read with <image> placeholders; LLaMA-Factory also "
                                           "shrinks images above image_max_pixels (default 768x768) before the "
                                           "processor, peftstudio does not"]))
        return Verdict("approximated" if note else "mapped", datasets.source_pairs(sources), note)

    rules = {**hf.RULES, **RULES, "dataset": dataset}
    return Dialect("LLaMA-Factory YAML", rules, DEFAULTS, {**hf.IGNORED, **IGNORED}, whole_file)


def whole_file(source: dict[str, Any]) -> list[Outcome]:
    outcomes = common.no_warmup_default(source, "warmup_steps", "warmup_ratio")
    if source.get("lora_alpha") is None and source.get("finetuning_type", "lora") == "lora":
        rank = int(source.get("lora_rank") or 8)
        outcomes.append(Outcome("lora_alpha", rank * 2, mapped(("peft.alpha", float(rank * 2))), from_default=True))
    if source.get("packing") is None:  # LLaMA-Factory packs pretraining data unless told otherwise
        packing = "on" if source.get("stage") == "pt" else "off"
        outcomes.append(Outcome("packing", None, mapped(("training.packing", packing)), from_default=True))
    if "stage" not in source:
        outcomes.append(Outcome("stage", "sft", mapped(), from_default=True))
    return outcomes


RULES = {
    "model_name_or_path": to("model.name_or_path", common.model_name),
    "stage": stage,
    "finetuning_type": finetuning,
    "quantization_bit": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "quantization_method": lambda v, _s: Verdict("mapped", note="bitsandbytes") if v in ("bnb", "bitsandbytes")
    else common.fail(f"quantization_method {v}: peftstudio quantizes with bitsandbytes"),
    "quantization_type": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "double_quantization": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "use_dora": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "use_rslora": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "pissa_init": lambda v, s: Verdict("mapped", note="folded into finetuning_type"),
    "lora_rank": to("peft.r", int),
    "lora_alpha": to("peft.alpha", float),
    "lora_dropout": to("peft.dropout", float),
    "lora_target": targets,
    "additional_target": refuse("trains whole modules beside the adapter (modules_to_save)"),
    "loraplus_lr_ratio": refuse("LoRA+ learning rates are not available"),
    "template": template,
    "cutoff_len": to("training.max_seq_length", int),
    "max_samples": lambda v, _s: approx([("data.max_samples", int(v))], "a cap on all rows after shuffling; "
                                        "LLaMA-Factory keeps the first N of each dataset"),
    "val_size": lambda v, _s: mapped(("data.validation_split", float(v))) if float(v) < 1
    else common.fail(f"{v} rows: peftstudio's data.validation_split is a share below 1"),
    "train_on_prompt": lambda v, _s: mapped(("training.loss_on", "all" if v else "completion")),
    "mask_history": lambda v, _s: mapped(("data.train_on_turns", "last" if v else "all")),
    "neat_packing": lambda v, _s: mapped(("training.packing", switch(v))),
    "flash_attn": lambda v, _s: mapped(("training.attention", {"fa2": "flash_attention_2", "sdpa": "sdpa",
                                                               "disabled": "eager", "auto": "auto"}[v])),
    "deepspeed": lambda v, _s: common.distributed("deepspeed", v),
    "pref_beta": lambda v, s: common.objective_setting(STAGES.get(str(s.get("stage")), "dpo"), "beta", v, "pref_beta"),
    "pref_loss": lambda v, s: common.objective_verdict(str(v), "pref_loss"),
    "dataset_dir": lambda v, s: Verdict("mapped", note="where dataset file_names are read from"),
    "do_train": ignore("peftstudio always trains"),
}
IGNORED = {key: "logging, caching or process setup: the run computes the same" for key in (
    "preprocessing_num_workers", "plot_loss", "tokenized_path", "ray_num_workers", "enable_liger_kernel",
    "use_unsloth_gc", "upcast_layernorm")}
RULES.update({key: image_setting(key) for key in (
    "image_max_pixels", "image_min_pixels", "video_max_pixels", "video_fps", "video_maxlen", "freeze_vision_tower",
    "freeze_multi_modal_projector", "freeze_language_model", "media_dir")})
MARKERS = {"stage", "finetuning_type", "template", "cutoff_len", "lora_target", "quantization_bit"}
