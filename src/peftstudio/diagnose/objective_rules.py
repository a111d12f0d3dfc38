"""Diagnosis rules of GRPO runs, read from the metrics TRL logs (reward, rewards/<name>/mean,
kl, completions/clipped_ratio): rewards that never leave zero, a KL that runs away, completions
always cut at max_completion_length, and one reward rising while another collapses.

A GRPO run's loss is no progress measure (it hovers near zero by construction), so the SFT loss
rules (divergence, no progress) do not apply to it; `is_grpo` tells them apart by the metrics.
"""

from __future__ import annotations

import statistics

from peftstudio.diagnose.evidence import RunEvidence
from peftstudio.diagnose.rules import Finding, _lower_learning_rate

KL_LIMIT = 1.0  # per-token KL to the reference; above it the policy has left the base far behind
KL_GROWTH = 10.0
CLIPPED_LIMIT = 0.5
HACKING_SHIFT = 0.2  # change of a reward's mean between the first and last third of the run


def is_grpo(evidence: RunEvidence) -> bool:
    return any("reward" in record for record in evidence.train)


def _series(evidence: RunEvidence, key: str) -> list[float]:
    return [float(r[key]) for r in evidence.train if r.get(key) is not None]


def _reward_names(evidence: RunEvidence) -> list[str]:
    keys = {k for r in evidence.train for k in r if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(k[len("rewards/"):-len("/mean")] for k in keys)


def rewards_never_match(evidence: RunEvidence) -> Finding | None:
    rewards = _series(evidence, "reward")
    if len(rewards) < 3 or any(rewards):
        return None
    names = ", ".join(_reward_names(evidence)) or "the rewards"
    return Finding("rewards_flat_zero", "rewards flat at zero",
                   f"reward 0 in all {len(rewards)} logs ({names}): no completion ever scored, so every group's "
                   "advantage is 0 and nothing is learned",
                   [], ["check that grpo.rewards name the right column (column: ...) and that a pattern can match; "
                        f"look at real completions with `peftstudio generate {evidence.run_dir}`",
                        "a partial-credit reward (contains, format) gives a signal before exact matches appear",
                        "a base model that never answers in the expected form may need SFT on the format first"])


def kl_blowing_up(evidence: RunEvidence) -> Finding | None:
    kl = _series(evidence, "kl")
    positive = [value for value in kl if value > 0]
    if not positive or max(kl) <= KL_LIMIT or max(kl) < KL_GROWTH * positive[0]:
        return None
    step = next(r["step"] for r in evidence.train if r.get("kl") == max(kl))
    beta = float(evidence.setting("grpo.beta", 0.04) or 0.0)
    overrides = [_lower_learning_rate(evidence, 0.3), f"grpo.beta={max(beta * 2, 0.04):g}"]
    return Finding("kl_blowup", "KL to the reference blowing up",
                   f"kl {positive[0]:.3g} at first, {max(kl):.3g} at step {step} (limit {KL_LIMIT:g})", overrides,
                   ["a policy far from its reference tends to reward-hack or collapse; a smaller learning rate or a "
                    "stronger KL term (grpo.beta) keeps it close"])


def completions_truncated(evidence: RunEvidence) -> Finding | None:
    clipped = _series(evidence, "completions/clipped_ratio")
    later = clipped[len(clipped) // 2:]
    if not later or statistics.fmean(later) <= CLIPPED_LIMIT:
        return None
    length = int(evidence.setting("grpo.max_completion_length", 256) or 256)
    return Finding("completions_truncated", "completions cut at max_completion_length",
                   f"{statistics.fmean(later):.0%} of completions hit grpo.max_completion_length={length} in the second "
                   "half of the run", [f"grpo.max_completion_length={length * 2}", "grpo.mask_truncated_completions=true"],
                   ["cut completions never reach their answer, so verifiable rewards score them 0"])


def reward_hacking(evidence: RunEvidence) -> Finding | None:
    shifts = {}
    for name in _reward_names(evidence):
        values = _series(evidence, f"rewards/{name}/mean")
        third = len(values) // 3
        if third:
            shifts[name] = statistics.fmean(values[-third:]) - statistics.fmean(values[:third])
    rising = [n for n, s in shifts.items() if s >= HACKING_SHIFT]
    falling = [n for n, s in shifts.items() if s <= -HACKING_SHIFT]
    if not rising or not falling:
        return None
    text = "; ".join(f"{n} {shifts[n]:+.2f}" for n in rising + falling)
    return Finding("reward_hacking", "one reward rising while another collapses",
                   f"mean reward change from the first to the last third of the run: {text}",
                   [f"grpo.rewards: lower the weight of {rising[0]} or raise {falling[0]}'s"],
                   ["the policy found a way to score on one function at the other's expense; look at completions with "
                    f"`peftstudio generate {evidence.run_dir}`"])


GRPO_RULES = (rewards_never_match, kl_blowing_up, completions_truncated, reward_hacking)
