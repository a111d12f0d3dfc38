"""TRL's SFTTrainer, wired from the plan: every SFTConfig field that matters set explicitly,
and checkpoints written through the atomic staging of `checkpoints.py`."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from peftstudio.plan.runplan import RunPlan
from peftstudio.train.callbacks import MetricsCallback, kill_self
from peftstudio.train.checkpoints import CheckpointDir
from peftstudio.train.distributed import shard_on_cpu
from peftstudio.train.faults import NO_FAULTS, Faults


def sft_config(plan: RunPlan, checkpoint_dir: Path, has_validation: bool) -> SFTConfig:
    """Map the resolved plan onto SFTConfig. Nothing is left to SFTConfig's own defaults
    (they assume a bf16 GPU and gradient checkpointing)."""
    training = plan.config.training
    return SFTConfig(
        **training_arguments(plan, checkpoint_dir, has_validation),
        # The rows arrive tokenized, already limited to max_seq_length (data.overlong) and with
        # their labels masked per training.loss_on (data/tokenization.py, TRL's masking rules),
        # so TRL's own truncation and mask flags have nothing left to do. TRL refuses a
        # max_length with padding-free batching and no bin packing: there it must be None.
        max_length=None if training.packing == "on" else training.max_seq_length,
        packing=False,
        padding_free=training.packing == "on",
        completion_only_loss=False,
        assistant_only_loss=False,
        shuffle_dataset=False,
        dataset_num_proc=None,
    )


def training_arguments(plan: RunPlan, checkpoint_dir: Path, has_validation: bool) -> dict:
    """The TrainingArguments fields every objective's TRL config gets, all from the plan (the
    TRL configs' own defaults assume a bf16 GPU, gradient checkpointing and a 1e-6 rate)."""
    config, schedule = plan.config, plan.schedule
    training, optim = config.training, config.optim
    warmup = optim.warmup_steps if optim.warmup_steps is not None else math.ceil(optim.warmup_ratio * schedule.optimizer_steps)
    return dict(
        output_dir=str(checkpoint_dir),
        seed=config.seed,
        data_seed=config.seed,
        max_steps=schedule.optimizer_steps if schedule.mode == "steps" else -1,
        num_train_epochs=training.num_epochs,
        per_device_train_batch_size=training.micro_batch_size,
        per_device_eval_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        optim=optim.name,
        learning_rate=optim.learning_rate,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.betas[0],
        adam_beta2=optim.betas[1],
        adam_epsilon=optim.eps,
        max_grad_norm=optim.max_grad_norm,
        lr_scheduler_type=optim.lr_scheduler,
        warmup_steps=warmup,
        bf16=training.precision == "bf16",
        fp16=training.precision == "fp16",
        use_cpu=config.device == "cpu",
        ddp_backend="gloo" if config.device == "cpu" and training.num_processes > 1 else None,
        ddp_find_unused_parameters=False,  # every adapter weight takes part in every step
        ddp_timeout=training.process_timeout_s,
        gradient_checkpointing=training.gradient_checkpointing == "on",
        # With a KV cache, transformers skips the position_ids-based mask that keeps packed
        # samples apart (masking_utils: packed sequences are detected only without one).
        use_cache=False,
        logging_strategy="steps",
        logging_steps=training.log_interval_steps,
        logging_first_step=False,
        # The default filter replaces a NaN/inf step loss by the window average: the log would
        # hide the very failure the watchdog and `diagnose` look for.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=training.eval_interval_steps,
        prediction_loss_only=True,
        save_strategy="steps",
        save_steps=training.save_interval_steps,
        save_total_limit=None,  # rotation happens after the atomic rename, in CheckpointDir.rotate
        save_only_model=False,
        load_best_model_at_end=False,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_drop_last=False,
        remove_unused_columns=True,
        torch_compile=False,
        full_determinism=False,
        ignore_data_skip=False,
        push_to_hub=False,
    )


class CheckpointingMixin:
    """Any TRL trainer that counts non-padding tokens and commits checkpoints atomically (put
    it first in the bases: `class X(CheckpointingMixin, DPOTrainer)`).
    `faults.kill_in_checkpoint` kills it between staging a checkpoint and committing it."""

    def __init__(self, *args, checkpoints: CheckpointDir, metrics: MetricsCallback, save_total_limit: int,
                 faults: Faults = NO_FAULTS, history: Path | None = None, fsdp_on_cpu: bool = False, **kwargs):
        self.fsdp_on_cpu = fsdp_on_cpu  # read while Trainer.__init__ creates the accelerator
        super().__init__(*args, **kwargs)
        self.checkpoints = checkpoints
        self.history = history  # metrics.jsonl, copied into each checkpoint
        self.metrics = metrics
        self.save_total_limit = save_total_limit
        self.faults = faults
        self._staging: Path | None = None

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.fsdp_on_cpu:
            shard_on_cpu(self.accelerator)
            self.is_fsdp_enabled = True

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.metrics.count_tokens(self._batch_tokens(inputs))
        return super().training_step(model, inputs, num_items_in_batch)

    def _batch_tokens(self, inputs) -> int:
        """Non-padding tokens of this micro-batch, summed over all processes (so tokens_seen
        and tokens/s describe the whole run, whatever the process count)."""
        if "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        elif "chosen_attention_mask" in inputs:  # ORPO's pairs: prompt + chosen, prompt + rejected
            tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
        elif "position_ids" in inputs:
            tokens = torch.tensor(inputs["position_ids"].numel(), device=inputs["position_ids"].device)
        else:
            return 0
        if self.accelerator.num_processes > 1:
            tokens = self.accelerator.reduce(tokens, reduction="sum")
        return int(tokens)

    def _get_output_dir(self, trial) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Every process writes its share (rank 0: weights, optimizer, scheduler, trainer state;
        each rank: its RNG state) into one staging dir; once all are done, rank 0 alone adds the
        run state and renames it into place, and nobody goes on before it is visible."""
        # Skips the TRL trainers' override, which writes a model card into the checkpoint root.
        step, main = self.state.global_step, self.args.should_save
        self._staging = self.checkpoints.new_staging(step) if main else self.checkpoints.staging_for(step)
        self.accelerator.wait_for_everyone()  # the staging dir exists (fresh) before anyone writes
        try:
            Trainer._save_checkpoint(self, model, trial)
            self.accelerator.wait_for_everyone()
            if main:
                self._commit(self._staging / f"checkpoint-{step}")
            self.accelerator.wait_for_everyone()
        finally:
            if main:
                shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def _commit(self, staged: Path) -> None:
        progress = self.metrics.progress  # the callback keeps it current; the checkpoint stores it
        progress.step = self.state.global_step
        if self.faults.kill_in_checkpoint == self.state.global_step:
            kill_self()
        self.checkpoints.commit(staged, progress, self.history)
        self.checkpoints.rotate(self.save_total_limit, progress.best_step)


class CheckpointingSFTTrainer(CheckpointingMixin, SFTTrainer):
    """SFTTrainer with peftstudio's token counting and atomic checkpoints, and the loss
    training.loss_impl chose."""

    def __init__(self, *args, loss_impl: str = "chunked", **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_impl = loss_impl

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """chunked: SFTTrainer's own loss, through the fused LM head TRL adds to the model (the
        full logits never exist). plain: the model's forward with labels (full logits, then
        transformers' fp32 cross-entropy), as Trainer computes it; TRL's token-accuracy and
        entropy metrics need the fused head and are not logged then."""
        if self.loss_impl == "chunked":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        return super(SFTTrainer, self).compute_loss(model, inputs, return_outputs, num_items_in_batch)
