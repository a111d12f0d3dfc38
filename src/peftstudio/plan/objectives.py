"""Plan-time checks and notes of the objectives beyond SFT (DPO, ORPO, KTO, GRPO).

Everything here reads the config only (no model, no data rows): the group arithmetic of GRPO
(TRL's rule: the generation batch is a multiple of num_generations), the context budget of
prompt + completion, the reward specs (import + signature of user code), and combinations
peftstudio does not train yet, each refused with why and what to do instead.
"""

from __future__ import annotations

from peftstudio.config.objective_schema import EXPERIMENTAL_OBJECTIVES, UNTRAINED_OBJECTIVES
from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem
from peftstudio.rewards import check_rewards, reward_columns

TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "orpo": "ORPOTrainer", "kto": "KTOTrainer", "grpo": "GRPOTrainer"}
# PiSSA / OLoRA train on a residual base: with the adapter disabled it is not the original model.
RESIDUAL_INITS = ("pissa", "olora")


def data_arguments(config: RunConfig) -> tuple[str, dict[str, str]]:
    """What `prepare_data` needs to know of the objective: its name and the reward columns."""
    needed = reward_columns(config.grpo.rewards) if config.objective == "grpo" else {}
    return config.objective, needed


def generation_batch(config: RunConfig) -> int | None:
    training = config.training
    if training.micro_batch_size == "auto":
        return None
    return training.micro_batch_size * training.gradient_accumulation_steps * training.num_processes


def objective_problems(config: RunConfig) -> list[Problem]:
    """Every reason the objective cannot run as configured."""
    objective = config.objective
    if objective == "sft":
        return []
    problems = []
    if objective in UNTRAINED_OBJECTIVES:
        problems.append(Problem("objective", f"{objective}: {UNTRAINED_OBJECTIVES[objective]}",
                                "use objective=dpo (preference data as is) or objective=sft on the chosen answers"))
    if config.peft.init.startswith(RESIDUAL_INITS):
        problems.append(Problem("peft.init", f"{config.peft.init} with objective={objective}: the reference is the base "
                                "with the adapter disabled, which for PiSSA/OLoRA is the residual, not the original model",
                                "use peft.init=default (or gaussian / loftq)"))
    if config.training.distributed != "none" or config.training.num_processes > 1:
        problems.append(Problem("training.distributed", f"objective={objective} runs in one process for now",
                                "set training.distributed=none training.num_processes=1"))
    if config.data.overlong == "drop":
        problems.append(Problem("data.overlong", f"drop with objective={objective}: TRL's trainer truncates instead",
                                "use data.overlong=truncate (or error)"))
    if objective == "orpo" and config.training.loss_impl != "plain":
        problems.append(Problem("training.loss_impl", f"{config.training.loss_impl} with objective=orpo: "
                                "trl.experimental's ORPOTrainer scores chosen and rejected over the full logits",
                                "set training.loss_impl=auto (or plain)"))
    if objective != "orpo" and config.training.loss_impl == "plain":
        problems.append(Problem("training.loss_impl", f"plain with objective={objective}: TRL's trainer always scores "
                                "with its fused LM head", "set training.loss_impl=auto (or chunked)"))
    targets = config.peft.target_modules
    if (isinstance(targets, list) and "lm_head" in targets) or config.data.add_special_tokens:
        key = "data.add_special_tokens" if config.data.add_special_tokens else "peft.target_modules"
        problems.append(Problem(key, f"objective={objective} trains no output-head weights: TRL's fused LM head "
                                "scores with the base head alone", "leave lm_head out of the targets and "
                                "data.add_special_tokens=false"))
    if config.training.packing == "on":
        problems.append(Problem("training.packing", f"on with objective={objective}: packing is for sft",
                                "set training.packing=off (or auto)"))
    if objective == "grpo":
        problems += _grpo_problems(config)
    return problems


def _grpo_problems(config: RunConfig) -> list[Problem]:
    grpo, training = config.grpo, config.training
    problems = check_rewards(grpo.rewards)
    batch = generation_batch(config)
    if batch is not None and batch % grpo.num_generations:
        problems.append(Problem("grpo.num_generations", f"the generation batch (micro_batch_size {training.micro_batch_size} "
                                f"× gradient_accumulation_steps {training.gradient_accumulation_steps} × num_processes "
                                f"{training.num_processes} = {batch}) is not a multiple of num_generations={grpo.num_generations} "
                                "(TRL's rule: every prompt's group of completions is generated together)",
                                _nearest_group_fix(config, batch)))
    context = config.model.architecture.max_position_embeddings if config.model.architecture else None
    total = grpo.max_prompt_length + grpo.max_completion_length
    if context is not None and total > context:
        problems.append(Problem("grpo.max_completion_length", f"max_prompt_length {grpo.max_prompt_length} + "
                                f"max_completion_length {grpo.max_completion_length} = {total} exceeds the model's "
                                f"context of {context} tokens", f"lower them to sum to at most {context}"))
    return problems


def _nearest_group_fix(config: RunConfig, batch: int) -> str:
    """The nearest settings that make the generation batch a multiple of num_generations."""
    grpo, training = config.grpo, config.training
    g, others = grpo.num_generations, batch // training.micro_batch_size
    lower = max(g, (training.micro_batch_size // g) * g)
    upper = -(-training.micro_batch_size // g) * g
    options = sorted({lower, upper}, key=lambda m: (abs(m - training.micro_batch_size), m))
    divisors = [d for d in range(2, batch + 1) if batch % d == 0 and abs(d - g) <= g]
    nearest_g = min(divisors, key=lambda d: (abs(d - g), -d)) if divisors else None
    fixes = [f"training.micro_batch_size={m}" + (f" (generation batch {m * others})" if others > 1 else "") for m in options]
    if nearest_g is not None:
        fixes.append(f"grpo.num_generations={nearest_g}")
    return "set " + " or ".join(fixes)


def objective_notes(config: RunConfig) -> list[str]:
    """What `plan` says about how the objective runs (nothing silent)."""
    objective = config.objective
    if objective == "sft":
        return []
    trainer = (f"{objective}: TRL's {TRAINERS[objective]} with the peft adapter; dropout off while training "
               f"(TRL's disable_dropout: policy and reference log-probs come from one deterministic network, so "
               f"peft.dropout={config.peft.dropout:g} is not applied)")
    reference = ("the reference model is the starting adapter (peft.init_adapter; a frozen copy of it)"
                 if config.peft.init_adapter else "the reference model is the base with the adapter disabled "
                 "(no second copy in memory)")
    if objective == "kto":
        kto = config.kto
        return [f"{trainer}; {reference}; beta={kto.beta}, loss {kto.loss_type}, weights desirable "
                f"{kto.desirable_weight} / undesirable {kto.undesirable_weight}"]
    if objective == "orpo":
        return [f"{trainer}; {EXPERIMENTAL_OBJECTIVES['orpo']}; no reference model: the loss is the SFT loss on the "
                f"chosen answer plus beta={config.orpo.beta} × the odds-ratio term, chosen and rejected in one "
                "concatenated forward pass over the full logits"]
    if objective == "dpo":
        dpo = config.dpo
        return [f"{trainer}; {reference}; beta={dpo.beta}, loss {dpo.loss_type}; each step scores chosen and rejected "
                "in one concatenated forward pass"]
    grpo, batch = config.grpo, generation_batch(config)
    groups = f"{batch // grpo.num_generations} prompt(s) × {grpo.num_generations} completions per generation round" \
        if batch else "generation batch from the micro-batch"
    kl = reference if grpo.beta > 0 else "grpo.beta=0: no KL term, no reference log-probs"
    rewards = ", ".join(f"{r.name}×{r.weight:g}" for r in grpo.rewards)
    return [f"{trainer}; {kl}; training.micro_batch_size counts completions: {groups}; completions up to "
            f"{grpo.max_completion_length} tokens at temperature {grpo.temperature}; rewards {rewards} (each logged "
            "as rewards/<name>/mean)"]


def measure_objective_data(config: RunConfig, data, setup, micro_batch: int):
    """Token figures of preference / KTO / prompt rows, measured with the run's tokenizer and
    chat template through the same `tokenize_row` SFT uses: the longest sequence each row makes
    (prompt + the longer answer; for GRPO the prompt). Returns (TokenizedData, warnings); the
    rows TRL trains on stay `data`'s, in its shape."""
    from dataclasses import replace

    from peftstudio.data.objective_data import measured_row
    from peftstudio.data.tokenization import Masking, tokenize_data
    from peftstudio.errors import UserError

    measured = replace(data, train_rows=[measured_row(r) for r in data.train_rows],
                       validation_rows=[measured_row(r) for r in data.validation_rows])
    limit = config.training.max_seq_length
    if config.objective == "grpo":
        limit = config.grpo.max_prompt_length + 1  # the prompt plus the one-token stand-in completion
        overlong = [where for where, row in zip(data.train_where + data.validation_where,
                                                measured.train_rows + measured.validation_rows)
                    if len(setup.tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True))
                    > config.grpo.max_prompt_length]
        if overlong:
            raise UserError(Problem(overlong[0], f"{len(overlong)} prompt(s) longer than grpo.max_prompt_length="
                                    f"{config.grpo.max_prompt_length} tokens (TRL would not cut them)",
                                    "raise grpo.max_prompt_length or shorten those prompts"))
    tokens = tokenize_data(measured, setup, limit, config.data.overlong, Masking(), micro_batch)
    tokens.prepared = data
    return tokens, tokens.warnings
