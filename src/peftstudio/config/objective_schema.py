"""The schema sections of the objectives beyond supervised fine-tuning (`objective=dpo|orpo|kto|grpo`).

Kept apart from schema.py so the objective keys read as one unit; schema.py puts them into
RunConfig. Each section is used only when `objective` names it; `plan` says which applies.
Field docstrings are the user documentation (`explain dpo.beta`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from peftstudio.config.eval_schema import ScoreSpec

Objective = Literal["sft", "dpo", "orpo", "kto", "grpo"]
OBJECTIVES: tuple[str, ...] = ("sft", "dpo", "orpo", "kto", "grpo")
PREFERENCE_OBJECTIVES = ("dpo", "orpo")
# What each objective is best for, in one line: the studio's method step shows these (the one
# place they are written; the browser reads them from /api/presets).
OBJECTIVE_BEST_FOR: dict[str, str] = {
    "sft": "Teaching a task or a style from example answers (instructions, chats, text); the usual first step.",
    "dpo": "Making an SFT model prefer better answers, from pairs of a chosen and a rejected answer per prompt.",
    "orpo": "SFT and preference in one pass from chosen/rejected pairs, without a reference model (less memory).",
    "kto": "Preference learning from single answers marked good or bad (thumbs up/down), when you have no pairs.",
    "grpo": "Tasks whose answers a function can check (maths, formats, JSON fields): learns from scored samples.",
}
# Objectives with a group option that peftstudio does not train yet, and why (plan refuses
# them; the importers refuse configs that use them).
UNTRAINED_OBJECTIVES: dict[str, str] = {}  # objective -> why peftstudio does not train it (none today)
# Objectives trained on a trainer outside TRL's stable API, and what plan says about it.
EXPERIMENTAL_OBJECTIVES = {"orpo": "TRL 1.16 ships ORPOTrainer only under trl.experimental (its API may change in "
                                   "any TRL release)"}
# Loss names other tools give as objectives, and the DPO loss_type each means.
DPO_LOSS_ALIASES = {"ipo": "ipo", "sigmoid": "sigmoid", "hinge": "hinge", "robust": "robust", "apo_zero": "apo_zero",
                    "apo_down": "apo_down"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class DpoSettings(_Section):
    beta: float = Field(default=0.1, gt=0.0, le=10.0)
    """How far the policy may move from the reference (the base with the adapter disabled):
    higher keeps it closer. 0.1 is the usual start; 0.01-0.5 in practice."""
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero", "apo_down", "sigmoid_norm"] = "sigmoid"
    """DPO loss: sigmoid (the paper's), ipo (squared, less overfitting on deterministic pairs),
    hinge (SLiC), robust (noisy labels, with label_smoothing), apo_zero / apo_down (anchored),
    sigmoid_norm (length-normalised)."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)
    """Assumed share of flipped preference labels (robust / conservative DPO); 0 trusts the data."""


class OrpoSettings(_Section):
    beta: float = Field(default=0.1, gt=0.0, le=10.0)
    """Weight of the odds-ratio preference term added to the SFT loss on the chosen answer
    (λ in the ORPO paper). No reference model is used."""


class KtoSettings(_Section):
    beta: float = Field(default=0.1, gt=0.0, le=10.0)
    """How far the policy may move from the reference (the base with the adapter disabled)."""
    desirable_weight: float = Field(default=1.0, gt=0.0, le=100.0)
    """Loss weight of the completions labelled desirable (label true)."""
    undesirable_weight: float = Field(default=1.0, gt=0.0, le=100.0)
    """Loss weight of the completions labelled undesirable. Keep desirable_weight × desirable rows
    / (undesirable_weight × undesirable rows) between 1 and 4/3 (KTO paper)."""
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    """kto (the paper's) or apo_zero_unpaired (anchored, for completions better than the model's own)."""


class RewardSpec(ScoreSpec):
    """One reward function of a GRPO run, with its weight and its arguments (the scoring
    functions are one registry with eval.metrics: peftstudio.rewards)."""

    weight: float = Field(default=1.0, ge=-100.0, le=100.0)
    """Weight of this reward in the sum the advantages are computed from."""


class GrpoSettings(_Section):
    num_generations: int = Field(default=4, ge=2, le=256, json_schema_extra={"memory": "completions per prompt: generation KV cache, logits and log-probs grow linearly with it"})
    """Completions sampled per prompt (G); the advantage of each is its reward relative to its
    group. training.micro_batch_size counts completions, so a micro-batch of 8 with G=4 holds
    2 prompts. The generation batch (micro_batch_size × gradient_accumulation_steps ×
    num_processes) must be a multiple of G."""
    max_prompt_length: int = Field(default=512, ge=8, le=131072)
    """Longest prompt in tokens; `plan` checks prompt + completion fits the model's context and
    counts prompts longer than this (they are refused)."""
    max_completion_length: int = Field(default=256, ge=1, le=131072, json_schema_extra={"memory": "generation KV cache and completion logits grow linearly with it"})
    """Longest sampled completion in tokens; longer ones are cut (`diagnose` watches how often)."""
    temperature: float = Field(default=1.0, gt=0.0, le=2.0)
    """Sampling temperature of the completions: lower samples closer to the model's best guess,
    fewer distinct completions per group."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    beta: float = Field(default=0.04, ge=0.0, le=10.0)
    """KL coefficient against the reference (the base with the adapter disabled); 0 drops the
    KL term and the reference log-probs (less memory and time)."""
    epsilon: float = Field(default=0.2, gt=0.0, le=1.0)
    """Clipping range of the policy ratio (PPO-style)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    """How token losses are averaged: dapo (TRL's default: over all active tokens of the batch),
    grpo (per sequence, then over sequences; biased toward short answers), dr_grpo (by a
    constant), bnpo (over the local batch's tokens)."""
    num_iterations: int = Field(default=1, ge=1, le=16)
    """Optimisation passes over each generated batch (μ in the paper)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO)."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss (DAPO)."""
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="exact_match")])
    """Reward functions, summed with their weights, each logged separately, e.g.
    [{name: exact_match, column: answer}, {name: format, pattern: '\\S+', weight: 0.2}]."""
