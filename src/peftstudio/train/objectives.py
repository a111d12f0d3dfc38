"""TRL's DPO / KTO / GRPO trainers wired from the plan, with the checkpoint and token-count
behaviour of SFT (`CheckpointingMixin`) and every config field set from the resolved plan.

The rows arrive in TRL's conversational shape (data/objective_data.py); the trainers render
them with the tokenizer `data/tokenizer.py` prepared (chat template chosen, pad token fixed).
The adapter is attached before the trainer sees the model, so TRL would add a frozen "ref"
copy of it; peftstudio removes that copy, and the reference is the base with the adapter
disabled, as `plan` says (a fresh LoRA adapter is zero, so the two agree at step 0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer

from peftstudio.plan.runplan import RunPlan
from peftstudio.rewards import build_rewards
from peftstudio.train.trainer import CheckpointingMixin, training_arguments


class _ReferenceIsBase:
    """Drops the "ref" adapter copy TRL adds for a PeftModel (see module doc), unless the run
    started from an earlier adapter (peft.init_adapter): that copy is then the reference."""

    def _drop_reference_copy(self, keep: bool) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if keep:
            return
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")
            model.set_adapter("default")


class CheckpointingDPOTrainer(CheckpointingMixin, _ReferenceIsBase, DPOTrainer):
    def __init__(self, *args, keep_reference_copy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._drop_reference_copy(keep_reference_copy)


class CheckpointingKTOTrainer(CheckpointingMixin, _ReferenceIsBase, KTOTrainer):
    def __init__(self, *args, keep_reference_copy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._drop_reference_copy(keep_reference_copy)


class CheckpointingGRPOTrainer(CheckpointingMixin, _ReferenceIsBase, GRPOTrainer):
    def __init__(self, *args, keep_reference_copy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._drop_reference_copy(keep_reference_copy)

    def _prepare_inputs(self, generation_batch):
        """GRPO's micro-batches arrive as prompts and are generated here, inside the training
        step, so the tokens a step trains on (prompt + completion, padding excluded) are counted
        on what this returns, not on the rows the mixin sees."""
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training:
            self.metrics.count_tokens(self._batch_tokens({"attention_mask": torch.cat(
                [inputs["prompt_mask"], inputs["completion_mask"]], dim=1)}))
        return inputs


# DPO and KTO score the policy against the adapter-disabled model, batch by batch: nothing
# precomputed or synced, and no dropout, so policy and reference log-probs come from the same
# deterministic network.
REFERENCE_PER_BATCH = {"precompute_ref_log_probs": False, "disable_dropout": True, "sync_ref_model": False}


def dpo_config(plan: RunPlan, checkpoint_dir: Path, has_validation: bool, pad_token: str) -> DPOConfig:
    config = plan.config
    return DPOConfig(
        **training_arguments(plan, checkpoint_dir, has_validation),
        max_length=config.training.max_seq_length,
        truncation_mode="keep_start",  # plan counted the pairs over the limit (data.overlong=truncate)
        padding_free=False,
        pad_to_multiple_of=None,
        pad_token=pad_token,
        loss_type=[config.dpo.loss_type],
        loss_weights=None,
        beta=config.dpo.beta,
        label_smoothing=config.dpo.label_smoothing,
        use_weighting=False,
        **REFERENCE_PER_BATCH,
        activation_offloading=False,
        dataset_num_proc=None,
    )


def kto_config(plan: RunPlan, checkpoint_dir: Path, has_validation: bool) -> KTOConfig:
    config = plan.config
    kto = config.kto
    return KTOConfig(
        **training_arguments(plan, checkpoint_dir, has_validation),
        max_length=config.training.max_seq_length,
        pad_to_multiple_of=None,
        loss_type=kto.loss_type,
        beta=kto.beta,
        desirable_weight=kto.desirable_weight,
        undesirable_weight=kto.undesirable_weight,
        # The KL estimate pairs each row with its neighbour in a fixed-order batch (TRL's rule);
        # the rows are already shuffled by data.shuffle_seed.
        train_sampling_strategy="sequential" if kto.loss_type == "kto" else "random",
        **REFERENCE_PER_BATCH,
        activation_offloading=False,
        dataset_num_proc=None,
    )


def grpo_config(plan: RunPlan, checkpoint_dir: Path, has_validation: bool) -> GRPOConfig:
    config = plan.config
    grpo = config.grpo
    arguments = training_arguments(plan, checkpoint_dir, has_validation)
    arguments["remove_unused_columns"] = False  # the rewards read the reference columns
    return GRPOConfig(
        **arguments,
        num_generations=grpo.num_generations,
        num_generations_eval=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        generation_batch_size=None,  # micro_batch × gradient_accumulation × processes (checked by plan)
        steps_per_generation=None,
        temperature=grpo.temperature,
        top_p=grpo.top_p,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        generation_kwargs=None,
        chat_template_kwargs=None,
        cache_implementation=None,
        use_vllm=False,
        use_transformers_paged=False,
        beta=grpo.beta,
        num_iterations=grpo.num_iterations,
        epsilon=grpo.epsilon,
        epsilon_high=None,
        delta=None,
        importance_sampling_level="token",
        reward_weights=[reward.weight for reward in grpo.rewards],
        multi_objective_aggregation="sum_then_normalize",
        scale_rewards=grpo.scale_rewards,
        loss_type=grpo.loss_type,
        mask_truncated_completions=grpo.mask_truncated_completions,
        sync_ref_model=False,
        top_entropy_quantile=1.0,
        entropy_coef=0.0,
        use_adaptive_entropy=False,
        disable_dropout=True,
        shuffle_dataset=True,  # TRL's RepeatSampler, seeded by `seed`: groups stay whole
        pad_to_multiple_of=None,
        log_completions=False,
    )


def orpo_trainer_class():
    """ORPO lives in trl.experimental in TRL 1.16 (plan says so): imported only for orpo runs."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's "importing from trl.experimental" warning: plan has said it
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class CheckpointingORPOTrainer(CheckpointingMixin, ORPOTrainer):
        """ORPO has no reference model: nothing to drop."""

    return ORPOConfig, CheckpointingORPOTrainer


def orpo_config(config_class, plan: RunPlan, checkpoint_dir: Path, has_validation: bool, pad_token_id: int):
    config = plan.config
    arguments = training_arguments(plan, checkpoint_dir, has_validation)
    return config_class(
        **arguments,
        max_length=config.training.max_seq_length,
        max_completion_length=None,  # the prompt is cut first, from the start (TRL's rule), to fit max_length
        beta=config.orpo.beta,
        disable_dropout=True,
        padding_value=pad_token_id,
        generate_during_eval=False,
        is_encoder_decoder=False,
        model_init_kwargs=None,
        dataset_num_proc=None,
    )


def objective_trainer(plan: RunPlan, model, tokenizer, train_rows: list[dict], validation_rows: list[dict],
                      checkpoint_dir: Path, **common):
    """The objective's checkpointing trainer over the prepared rows."""
    from datasets import Dataset

    validation = Dataset.from_list(validation_rows) if validation_rows else None
    train = Dataset.from_list(train_rows)
    has_validation = validation is not None
    objective = plan.config.objective
    common["keep_reference_copy"] = plan.config.peft.init_adapter is not None
    if objective == "dpo":
        return CheckpointingDPOTrainer(model=model, args=dpo_config(plan, checkpoint_dir, has_validation, tokenizer.pad_token),
                                       train_dataset=train, eval_dataset=validation, processing_class=tokenizer, **common)
    if objective == "kto":
        return CheckpointingKTOTrainer(model=model, args=kto_config(plan, checkpoint_dir, has_validation),
                                       train_dataset=train, eval_dataset=validation, processing_class=tokenizer, **common)
    if objective == "orpo":
        config_class, trainer_class = orpo_trainer_class()
        common.pop("keep_reference_copy")
        return trainer_class(model=model, args=orpo_config(config_class, plan, checkpoint_dir, has_validation,
                                                           tokenizer.pad_token_id),
                             train_dataset=train, eval_dataset=validation, processing_class=tokenizer, **common)
    if objective == "grpo":
        rewards = [reward.function for reward in build_rewards(plan.config.grpo.rewards)]
        return CheckpointingGRPOTrainer(model=model, reward_funcs=rewards, args=grpo_config(plan, checkpoint_dir, has_validation),
                                        train_dataset=train, eval_dataset=validation, processing_class=tokenizer, **common)
    raise ValueError(f"no trainer for objective {objective!r}")  # plan refuses it before this
