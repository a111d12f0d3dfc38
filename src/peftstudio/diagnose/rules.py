"""Diagnosis rules: each reads a run's evidence and, when it sees its problem, names it with
the numbers that show it and the overrides to try.

The thresholds are deliberately plain (a spike is a loss 50% above the best so far; no
progress is less than 2% improvement) so a user can check a finding against the loss curve.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable

from peftstudio.diagnose.evidence import RunEvidence

SPIKE_FACTOR = 1.5
MIN_IMPROVEMENT = 0.02
OVERFIT_MARGIN = 0.02
PADDING_WASTE_LIMIT = 0.30
STALL_FACTOR = 3.0
# Measured speed below this share of the throughput model's prediction (which already assumes
# ~35% of the GPU's peak) is slow enough to name.
SLOW_SHARE = 0.3
_OOM_PATTERN = re.compile(r"OutOfMemoryError|CUDA out of memory|MPS backend out of memory|out of memory", re.I)


@dataclass(frozen=True)
class Finding:
    """One named problem: what it is, what shows it, and what to change."""

    problem: str
    title: str
    evidence: str
    overrides: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose_evidence(evidence: RunEvidence) -> list[Finding]:
    """Every rule's finding for this run, most severe first."""
    from peftstudio.diagnose.objective_rules import GRPO_RULES, is_grpo

    # A GRPO loss hovers near zero by construction: its rules read rewards and KL instead.
    rules = [r for r in RULES if r not in (divergence, no_progress)] + list(GRPO_RULES) if is_grpo(evidence) else RULES
    findings = []
    for rule in rules:
        finding = rule(evidence)
        if finding is not None:
            findings.append(finding)
    return findings


def _lower_learning_rate(evidence: RunEvidence, factor: float) -> str:
    rate = float(evidence.setting("optim.learning_rate", 2e-4))
    return f"optim.learning_rate={max(rate * factor, 1e-6):.2g}"


def _warmup_override(evidence: RunEvidence) -> str | None:
    steps = evidence.setting("training.num_batches", 0) or 0
    warmup_steps = evidence.setting("optim.warmup_steps")
    ratio = float(evidence.setting("optim.warmup_ratio", 0.0) or 0.0)
    current = warmup_steps if warmup_steps is not None else math.ceil(ratio * steps)
    wanted = max(math.ceil(0.1 * steps), 1)
    return f"optim.warmup_steps={wanted}" if current < wanted else None


def _clipping_override(evidence: RunEvidence) -> str | None:
    norm = float(evidence.setting("optim.max_grad_norm", 1.0))
    return "optim.max_grad_norm=1.0" if norm == 0 or norm > 1.0 else None


def out_of_memory(evidence: RunEvidence) -> Finding | None:
    match = _OOM_PATTERN.search(evidence.log_text)
    if match is None:
        return None
    line = next((l for l in evidence.log_text.splitlines() if _OOM_PATTERN.search(l)), match.group(0))
    from peftstudio.diagnose.memory_advice import memory_overrides

    overrides, advice = memory_overrides(evidence)
    return Finding("out_of_memory", "out of memory", line.strip()[:300], overrides, advice)


def nan_loss(evidence: RunEvidence) -> Finding | None:
    bad = [r["step"] for r in evidence.train if not math.isfinite(float(r["loss"]))]
    bad_evals = [r["step"] for r in evidence.evals if not math.isfinite(float(r["eval_loss"]))]
    if not bad and not bad_evals:
        return None
    first = min(bad + bad_evals)
    last_good = [r for r in evidence.train if r["step"] < first and math.isfinite(float(r["loss"]))]
    grad = f"; grad norm before it {last_good[-1].get('grad_norm'):.3g}" if last_good and last_good[-1].get("grad_norm") else ""
    evidence_text = f"loss is NaN/inf from step {first} ({len(bad)} of {len(evidence.train)} logs){grad}"
    overrides, advice = [], []
    if evidence.setting("training.precision") == "fp16":
        has_bf16 = evidence.plan is not None and evidence.plan.hardware.gpu_bf16
        overrides.append("training.precision=bf16" if has_bf16 else "training.precision=fp32")
        advice.append("fp16 overflows where bf16 would not" + ("" if has_bf16 else
                      "; this GPU has no bf16, so fp32 (slower) or a lower learning rate with longer warmup"))
    overrides.append(_lower_learning_rate(evidence, 0.1))
    overrides += [o for o in (_warmup_override(evidence), _clipping_override(evidence)) if o]
    advice.append("a NaN never recovers: restart with training.resume=never (the checkpoints before the NaN are fine to keep)")
    return Finding("nan_loss", "NaN or infinite loss", evidence_text, overrides, advice)


def divergence(evidence: RunEvidence) -> Finding | None:
    losses = [(r["step"], float(r["loss"])) for r in evidence.train if math.isfinite(float(r["loss"]))]
    spikes = []
    for index in range(2, len(losses)):
        best = min(loss for _, loss in losses[:index])
        if losses[index][1] > SPIKE_FACTOR * best:
            spikes.append((losses[index][0], losses[index][1], best))
    if not spikes:
        return None
    step, loss, best = spikes[0]
    text = f"loss jumped to {loss:.4g} at step {step}, {loss / best:.1f}x the best so far ({best:.4g}); {len(spikes)} spike(s)"
    overrides = [_lower_learning_rate(evidence, 0.3)]
    overrides += [o for o in (_warmup_override(evidence), _clipping_override(evidence)) if o]
    return Finding("divergence", "loss spikes (divergence)", text, overrides,
                   ["a lower peak learning rate with a longer warmup is the usual cure; clipping limits single bad batches"])


def no_progress(evidence: RunEvidence) -> Finding | None:
    losses = evidence.finite_losses
    if len(losses) < 3 or len(losses) != len(evidence.losses):
        return None
    later = losses[len(losses) // 2:]
    if losses[0] > 0 and (losses[0] - min(later)) / losses[0] >= MIN_IMPROVEMENT:
        return None
    text = f"loss {losses[0]:.4g} → {losses[-1]:.4g} over {len(losses)} logs (less than {MIN_IMPROVEMENT:.0%} better)"
    overrides, advice = [], []
    rate = float(evidence.setting("optim.learning_rate", 2e-4))
    if all(loss == 0 for loss in losses):
        advice.append("a loss of exactly 0 means no token is trained on: every label is masked")
    if rate < 1e-4:
        overrides.append(f"optim.learning_rate={min(rate * 10, 1e-2):.2g}")
        advice.append(f"learning rate {rate:g} is low for LoRA (1e-4 to 3e-4 is usual)")
    if evidence.setting("training.loss_on") == "completion":
        overrides.append("training.loss_on=all")
        advice.append("with loss on completions only, a wrong data.format or chat template can mask every answer "
                      "token; check the detected format in `peftstudio plan`")
    data_format = evidence.plan.data.format if evidence.plan is not None else None
    if data_format:
        advice.append(f"data was read as {data_format!r}; if that is wrong, set data.format explicitly")
    return Finding("no_progress", "loss not decreasing", text, overrides, advice)


def overfitting(evidence: RunEvidence) -> Finding | None:
    evals = [(r["step"], float(r["eval_loss"])) for r in evidence.evals if math.isfinite(float(r["eval_loss"]))]
    if len(evals) < 2:
        return None
    best_step, best = min(evals, key=lambda item: item[1])
    last_step, last = evals[-1]
    if best_step == last_step or last <= best * (1 + OVERFIT_MARGIN):
        return None
    train_at = {r["step"]: float(r["loss"]) for r in evidence.train if math.isfinite(float(r["loss"]))}
    before = [loss for step, loss in train_at.items() if step <= best_step]
    after = [loss for step, loss in train_at.items() if step > best_step]
    if not before or not after or min(after) >= before[-1]:
        return None
    text = (f"eval loss {best:.4g} at step {best_step} rose to {last:.4g} at step {last_step} "
            f"while train loss fell to {min(after):.4g}")
    overrides = [f"training.num_batches={best_step}", "training.early_stopping_patience=2",
                 "training.metric_for_best_model=eval_loss"]
    if float(evidence.setting("peft.dropout", 0.0)) < 0.1:
        overrides.append("peft.dropout=0.1")
    return Finding("overfitting", "overfitting", text, overrides,
                   ["more data, a lower peft.r or fewer steps also help; the best checkpoint is kept when "
                    "metric_for_best_model is set"])


def slow_steps(evidence: RunEvidence) -> Finding | None:
    from peftstudio.diagnose.speed import measured_tokens_per_second, predicted_tokens_per_second

    waste = evidence.plan.data.padding_waste if evidence.plan is not None else 0.0
    times = [float(r["step_time"]) for r in evidence.train[1:] if r.get("step_time")]
    stalls = len(times) >= 4 and max(times) > STALL_FACTOR * statistics.median(times)
    padded = waste > PADDING_WASTE_LIMIT and evidence.setting("training.packing") != "on"
    measured, predicted = measured_tokens_per_second(evidence), predicted_tokens_per_second(evidence)
    slow = measured is not None and predicted is not None and measured < SLOW_SHARE * predicted[0]
    if not (stalls or padded or slow):
        return None
    parts, overrides, advice = [], [], []
    if padded:
        parts.append(f"{waste:.0%} of the tokens in a batch are padding")
        if evidence.setting("device") == "cuda":
            overrides += ["training.packing=on", "training.attention=flash_attention_2"]
        overrides.append(f"training.micro_batch_size={max(int(evidence.setting('training.micro_batch_size', 2)) // 2, 1)}")
        advice.append("packing (CUDA with flash-attn) removes padding; smaller micro-batches pad less")
    if stalls:
        parts.append(f"slowest step {max(times):.3g}s vs median {statistics.median(times):.3g}s")
        advice.append("steps that stall while others are fast point at data loading or I/O: keep data.path on "
                      "local disk and the machine otherwise idle")
    if slow:
        parts.append(f"{measured:,.0f} tokens/s, {measured / predicted[0]:.0%} of the {predicted[0]:,.0f} the "
                     f"throughput model predicts on {predicted[1]}")
        if evidence.setting("training.gradient_checkpointing") == "on":
            overrides.append("training.gradient_checkpointing=off")
        advice.append("far below the GPU's speed: check that nothing else runs on the GPU (nvidia-smi), that the "
                      "attention is sdpa or flash_attention_2, and whether memory allows gradient checkpointing off")
    return Finding("slow_steps", "slow steps", "; ".join(parts), overrides, advice)


RULES: tuple[Callable[[RunEvidence], Finding | None], ...] = (
    out_of_memory, nan_loss, divergence, no_progress, overfitting, slow_steps,
)
