"""The studio wizard's JSON (`{"algorithm": "qlora", "rank": 8, ...}`) → peftstudio."""

from __future__ import annotations

from typing import Any

from peftstudio.config.importers import common
from peftstudio.config.importers.table import Dialect, Refused, Verdict, mapped, switch, to

PEFT_ALGORITHMS = ("lora", "qlora", "dora", "qdora", "rslora", "pissa")
QUANTIZATION = {"nf4": "nf4", "fp4": "fp4", "int8": "int8", "8bit": "int8", "4bit": "nf4", "none": "none"}


def algorithm(value: Any, _source) -> Verdict:
    if str(value).lower() not in PEFT_ALGORITHMS:
        raise Refused(f"algorithm {value!r} is not one of {', '.join(PEFT_ALGORITHMS)}")
    return mapped(("defaults.peft", str(value).lower()))


def quantization(value: Any, _source) -> Verdict:
    if value not in QUANTIZATION:
        raise Refused(f"quantization {value!r} is not one of nf4, fp4, int8, none")
    return mapped(("peft.quantization", QUANTIZATION[value]))


RULES = {
    "algorithm": algorithm, "method": algorithm,
    "model": to("model.name_or_path", common.model_name), "base_model": to("model.name_or_path", common.model_name),
    "dataset": to("data.path", str), "rank": to("peft.r", int), "alpha": to("peft.alpha", float),
    "dropout": to("peft.dropout", float), "target_modules": to("peft.target_modules"),
    "quantization": quantization, "double_quantization": to("peft.double_quant", bool),
    "compute_dtype": to("peft.compute_dtype", str), "learning_rate": to("optim.learning_rate", float),
    "optimizer": to("optim.name", common.optimizer), "lr_scheduler": common.scheduler_rule,
    "warmup_ratio": to("optim.warmup_ratio", float), "weight_decay": to("optim.weight_decay", float),
    "batch_size": to("training.micro_batch_size", int), "micro_batch_size": to("training.micro_batch_size", int),
    "gradient_accumulation_steps": to("training.gradient_accumulation_steps", int),
    "num_epochs": common.epochs_rule(), "max_steps": common.positive("training.num_batches"),
    "max_seq_length": to("training.max_seq_length", int),
    "gradient_checkpointing": to("training.gradient_checkpointing", switch),
    "precision": to("training.precision", str), "seed": to("seed", int), "output_dir": common.output_dir,
}
DIALECT = Dialect("wizard JSON", RULES)
MARKERS = {"algorithm", "rank"}
