"""Disk a run's checkpoints take, from the architecture numbers alone: what `plan` checks
against the free disk and `doctor` and `launch` report."""

from __future__ import annotations

from peftstudio.config.schema import RunConfig
from peftstudio.errors import UserError
from peftstudio.units import MIB

# Tokenizer files, trainer/RNG/scheduler state and the peftstudio state in each checkpoint.
CHECKPOINT_OVERHEAD_BYTES = 20 * MIB
# Adapter weights in fp32, plus AdamW's two fp32 states per trainable parameter.
CHECKPOINT_BYTES_PER_TRAINABLE = 4 + 8


def trainable_parameters(config: RunConfig) -> int | None:
    """Adapter (and trainable bias) parameters, from the architecture numbers; None without them."""
    from peftstudio.plan.architecture import adapter_parameters, architecture_of, trainable_bias_parameters

    try:
        arch = architecture_of(config)
    except UserError:
        return None
    return adapter_parameters(arch, config.peft) + trainable_bias_parameters(arch, config.peft)


def checkpoint_disk_bytes(config: RunConfig) -> tuple[int, int] | None:
    """(one checkpoint, the most the run holds at once): the kept checkpoints (+ the best), one
    more being written before the oldest is deleted, and the final adapter."""
    trainable = trainable_parameters(config)
    if trainable is None:
        return None
    one = trainable * CHECKPOINT_BYTES_PER_TRAINABLE + CHECKPOINT_OVERHEAD_BYTES
    kept = config.training.save_total_limit + (1 if config.training.metric_for_best_model else 0)
    return one, one * (kept + 1) + trainable * 4 + CHECKPOINT_OVERHEAD_BYTES
