"""Memory terms of the objectives beyond SFT, on top of plan/memory.py's SFT arithmetic
(pure arithmetic, no torch). memory.py calls `objective_components` once, with its own
per-sequence activation and per-token logit functions, and takes the components returned.

- DPO / ORPO: chosen and rejected run as one concatenated batch of 2B sequences, so the
  activations and logits are those of 2B; DPO adds the reference log-probs (computed with the
  adapter disabled, no grad: only their per-token values stay, 2 × 2B × L fp32).
- KTO: the B completions plus, for the KL estimate, B mismatched completions run without grad;
  their transient logits are gone before the backward peak; log-probs stay.
- GRPO: training.micro_batch_size counts completions (B = prompts × G). Training runs B
  sequences of prompt + completion, scored on the completion tokens only (TRL keeps
  `logits_to_keep`): the B·G·C·V logits of the usual formula, except that TRL 1.16 scores every
  objective through its fused LM head (`training.loss_impl=chunked`), so what is held is one
  tile plus a few values per token, growing with B · C rather than B · C · V. Before that, generation samples the whole generation batch
  (B × gradient_accumulation_steps completions) at once: its KV cache, 2 · layers · kv_heads ·
  head_dim · (P + C) per completion, is the generation-time peak; counted where it exceeds the
  training transient (activations + logits), since both never live at the same time. Old and
  reference log-probs of the generation batch (fp32 per completion token) stay all step.
"""

from __future__ import annotations

from collections.abc import Callable

from peftstudio.config.schema import RunConfig

FP32 = 4


def sequence_length(config: RunConfig) -> int:
    """The longest sequence a step trains on: max_seq_length, or for GRPO prompt + completion."""
    if config.objective == "grpo":
        return config.grpo.max_prompt_length + config.grpo.max_completion_length
    return config.training.max_seq_length


def objective_components(config: RunConfig, components: dict[str, int], batch: int, seq: int,
                         activations: Callable[[int, int], int], loss_bytes: Callable[[int], int],
                         compute_bytes: int) -> dict[str, int]:
    """The components of an objective run: `components` (SFT's) with the objective's terms.
    `activations(seq_len, micro_batch)` gives one sequence's saved activations, `loss_bytes(tokens)`
    the head and loss over that many positions (TRL's fused LM head for every objective here)."""
    objective = config.objective
    if objective in ("dpo", "orpo"):
        pairs = 2 * batch  # chosen + rejected, concatenated
        updated = {**components, "activations": pairs * activations(seq, pairs),
                   "logits and loss": loss_bytes(pairs * seq)}
        if objective == "dpo":
            updated["reference log-probs"] = FP32 * pairs * seq
        return updated
    if objective == "kto":
        return {**components, "reference log-probs": FP32 * 2 * batch * seq}
    if objective == "grpo":
        return _grpo_components(config, components, batch, activations, loss_bytes, compute_bytes)
    return components


def _grpo_components(config: RunConfig, components: dict[str, int], batch: int, activations: Callable[[int, int], int],
                     loss_bytes: Callable[[int], int], compute_bytes: int) -> dict[str, int]:
    grpo, arch = config.grpo, config.model.architecture
    prompt, completion = grpo.max_prompt_length, grpo.max_completion_length
    length = prompt + completion
    generation_batch = batch * config.training.gradient_accumulation_steps
    train_activations = batch * activations(length, batch)
    train_logits = loss_bytes(batch * completion)
    head = arch.head_dim or arch.hidden_size // arch.num_heads
    kv_cache = generation_batch * length * 2 * arch.num_layers * arch.num_kv_heads * head * compute_bytes
    # Each decoding step's logits (last position only, fp32 for sampling) for the whole batch.
    sampling = generation_batch * arch.vocab_size * (compute_bytes + FP32)
    log_probs = FP32 * generation_batch * completion * (2 if grpo.beta > 0 else 1)
    return {**components, "activations": train_activations, "logits and loss": train_logits,
            "generation KV cache (beyond training)": max(0, kv_cache + sampling - train_activations - train_logits),
            "old and reference log-probs": log_probs}

