"""Values every foreign format shares: optimizers, schedulers, objectives, precision, trackers."""

from __future__ import annotations

import json
import math
from typing import Any

from peftstudio.config.importers.table import Pairs, Refused, Rule, Verdict, approx, mapped

# Source optimizer name → peftstudio optim.name. The bitsandbytes names keep their 8-bit or
# paged states; `plan` checks that bitsandbytes can run them on the machine it plans for.
OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_hf": "adamw_torch", "adamw": "adamw_torch",
              "adamw_torch_fused": "adamw_torch_fused", "adafactor": "adafactor", "sgd": "sgd",
              "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit", "paged_adamw": "paged_adamw_32bit",
              # torchtune / torch class paths
              "torch.optim.AdamW": "adamw_torch", "torch.optim.SGD": "sgd",
              "bitsandbytes.optim.PagedAdamW8bit": "paged_adamw_8bit", "bitsandbytes.optim.PagedAdamW": "paged_adamw_32bit",
              "bitsandbytes.optim.AdamW8bit": "adamw_8bit"}
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "polynomial": "polynomial",
              "constant_with_warmup": "constant",
              "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup": "cosine",
              "torchtune.modules.get_cosine_schedule_with_warmup": "cosine"}

# The objective table: a source objective → peftstudio's objective group option. An objective
# maps when peftstudio has that option (conf/objective/NAME.yaml) and is refused until then, so
# when DPO/ORPO/KTO/GRPO land, configs that use them import with no change here.
OBJECTIVES = {"sft": "sft", "nll": "sft", "dpo": "dpo", "ipo": "dpo", "orpo": "orpo", "kto": "kto", "grpo": "grpo",
              "simpo": "simpo", "apo_zero": "dpo", "sigmoid": "dpo"}


def optimizer(value: Any) -> str:
    name = str(value)
    if name not in OPTIMIZERS:
        offered = ", ".join(sorted(set(OPTIMIZERS.values())))
        raise Refused(f"optimizer {name!r} is not available; peftstudio offers {offered}")
    return OPTIMIZERS[name]


# Optimizers that have no exact twin here but a close one (the same algorithm, another kernel).
CLOSE_OPTIMIZERS = {"adamw_torch_8bit": ("adamw_8bit", "bitsandbytes' 8-bit AdamW instead of torchao's"),
                    "adamw_8bit_torchao": ("adamw_8bit", "bitsandbytes' 8-bit AdamW instead of torchao's"),
                    "paged_adamw": ("paged_adamw_32bit", "")}


def optimizer_rule(value: Any, _source) -> Verdict:
    if str(value) in CLOSE_OPTIMIZERS:
        name, note = CLOSE_OPTIMIZERS[str(value)]
        return mapped(("optim.name", name), note=note)
    return mapped(("optim.name", optimizer(value)))


def scheduler(value: Any) -> str:
    if str(value) not in SCHEDULERS:
        raise Refused(f"scheduler {value!r} is not available; peftstudio offers cosine, linear, constant, polynomial")
    return SCHEDULERS[str(value)]


def scheduler_rule(value: Any, source: dict[str, Any]) -> Verdict:
    name = scheduler(value)
    if str(value) == "constant_with_warmup":
        return mapped(("optim.lr_scheduler", name), note="constant after warmup; peftstudio's constant schedule "
                                                          "also warms up by optim.warmup_*")
    return mapped(("optim.lr_scheduler", name))


def objective_verdict(name: str, where: str) -> Verdict:
    """The one place an objective is mapped or refused (see OBJECTIVES)."""
    from peftstudio.config.compose import group_options

    target = OBJECTIVES.get(str(name).lower())
    if target is None:
        raise Refused(f"{where} {name!r}: peftstudio has no such objective")
    from peftstudio.config.objective_schema import DPO_LOSS_ALIASES, UNTRAINED_OBJECTIVES

    if target in UNTRAINED_OBJECTIVES:
        raise Refused(f"{where} {name!r}: {UNTRAINED_OBJECTIVES[target]}")
    options = group_options("objective")
    if target in options:
        loss = [("dpo.loss_type", DPO_LOSS_ALIASES[str(name).lower()])] if target == "dpo" and \
            str(name).lower() in DPO_LOSS_ALIASES else []
        return mapped(("defaults.objective", target), *loss)
    if target == "sft":
        return mapped()  # peftstudio trains supervised fine-tuning unless an objective says otherwise
    raise Refused(f"{where} {name!r}: objective {target} is not available in peftstudio yet (it trains sft)")


def whole_epochs(value: Any) -> int:
    if float(value) != math.floor(float(value)) or float(value) < 1:
        raise Refused(f"{value} is not a whole number of epochs; set training.num_batches instead")
    return int(value)


def epochs_rule(key: str = "training.num_epochs") -> Rule:
    return lambda value, _source: mapped((key, whole_epochs(value)))


def positive(key: str, convert=int) -> Rule:
    """A positive number maps; 0 / -1 mean 'unset' in HF and Axolotl."""
    def rule(value, _source):
        if float(value) <= 0:
            return Verdict("ignored", note=f"{value!r} means unset in the source")
        return mapped((key, convert(value)))
    return rule


def output_dir(value: Any, _source) -> Verdict:
    text = str(value).rstrip("/")
    return mapped(("training.output_dir", text), ("training.checkpoint_dir", f"{text}/checkpoints"))


def trackers(value: Any, _source) -> Verdict:
    names = [value] if isinstance(value, str) else list(value or [])
    known = ("wandb", "mlflow", "tensorboard")
    chosen = known if "all" in names else [n for n in names if n in known]
    others = [n for n in names if n not in known + ("none", "all")]
    pairs: Pairs = [(f"logging.{name}", True) for name in chosen]
    if others:
        return approx(pairs, f"trackers {others} are not available (metrics.jsonl is always written); "
                             "they only record, so the run is the same")
    return mapped(*pairs) if pairs else Verdict("ignored", note="no tracker")


def precision_from(source: dict[str, Any], bf16_key: str = "bf16", fp16_key: str = "fp16") -> str:
    bf16, fp16 = source.get(bf16_key), source.get(fp16_key)
    if bf16 == "auto" or fp16 == "auto":
        return "auto"
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"


def precision_rule(bf16_key: str = "bf16", fp16_key: str = "fp16") -> Rule:
    return lambda _value, source: mapped(("training.precision", precision_from(source, bf16_key, fp16_key)))


def attention(value: Any) -> str:
    names = {"flash_attention_2": "flash_attention_2", "fa2": "flash_attention_2", "sdpa": "sdpa", "eager": "eager",
             "flash_attn": "flash_attention_2", "auto": "auto"}
    if str(value) not in names:
        raise Refused(f"attention {value!r} is not available; peftstudio offers sdpa, flash_attention_2, eager")
    return names[str(value)]


def attention_rule(value: Any, _source) -> Verdict:
    """An attention implementation; another kernel of the same exact attention (FlashAttention-3,
    a hub kernel, xformers, flex) maps to the closest one peftstudio runs, said as such."""
    name = str(value)
    try:
        return mapped(("training.attention", attention(name)))
    except Refused:
        if "flash" in name.lower():
            return approx([("training.attention", "flash_attention_2")], f"{name}: the same exact attention, "
                                                                          "computed by FlashAttention-2")
        if name in ("xformers", "flex_attention"):
            return approx([("training.attention", "sdpa")], f"{name}: the same exact attention, computed by sdpa")
        raise


def distributed(kind: str, value: Any) -> Verdict:
    """A DeepSpeed / FSDP config → training.distributed; the details of the source's file are
    not carried, peftstudio writes its own accelerate config for the strategy."""
    text = json.dumps(value) if isinstance(value, dict) else str(value)
    if kind == "deepspeed":
        stage = "3" if ("z3" in text or "zero3" in text or '"stage": 3' in text) else \
            "2" if ("z2" in text or "zero2" in text or '"stage": 2' in text) else None
        if stage is None:
            raise Refused(f"DeepSpeed config {text[:60]!r}: stage 1 or unknown; peftstudio runs ZeRO-2 or ZeRO-3")
        return approx([("training.distributed", f"deepspeed_zero{stage}")],
                      f"ZeRO-{stage} with peftstudio's own DeepSpeed settings (offload and buckets not copied); "
                      "set training.num_processes to your GPU count")
    return approx([("training.distributed", "fsdp")],
                  "FSDP with peftstudio's own wrapping settings; set training.num_processes to your GPU count")





def fail(reason: str):
    """Refuse from inside an expression (a lambda rule)."""
    raise Refused(reason)


def no_warmup_default(source: dict[str, Any], steps_key: str, ratio_key: str) -> list:
    """HF, Axolotl and LLaMA-Factory warm up for 0 steps unless told; peftstudio's default is 3%."""
    from peftstudio.config.importers.table import Outcome

    if source.get(steps_key) is None and source.get(ratio_key) is None:
        return [Outcome(steps_key, 0, mapped(("optim.warmup_steps", 0)), from_default=True)]
    return []


PREQUANTIZED = ("gptq", "awq", "aqlm", "gguf", "exl2", "hqq", "bnb-4bit")


def model_name(value: Any) -> str:
    """A model id; a base already quantized by another method (GPTQ, AWQ, ...) is refused."""
    name = str(value)
    marker = next((m for m in PREQUANTIZED if m in name.lower()), None)
    if marker:
        raise Refused(f"{name} looks like a {marker.upper()}-quantized base: peftstudio quantizes a full-precision "
                      "base with bitsandbytes itself; name the unquantized model")
    return name


def objective_setting(objective: Any, key: str, value: Any, where: str) -> Verdict:
    """A setting of an objective (rl_beta, pref_beta, kto_desirable_weight, ...): the objective
    mapped as `objective_verdict` does, plus `<objective>.<key>` = value."""
    verdict = objective_verdict(objective, where)
    target = OBJECTIVES[str(objective).lower()]
    if target == "sft":
        raise Refused(f"{where}={value!r} applies to a preference or RL objective, and this config trains sft")
    verdict.pairs.append((f"{target}.{key}", float(value)))
    return verdict
