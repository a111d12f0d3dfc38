"""Memory changes to try after an out-of-memory failure."""

from __future__ import annotations

from peftstudio.diagnose.evidence import RunEvidence


def candidate_changes(evidence: RunEvidence) -> list[list[str]]:
    """Each candidate is a set of overrides that lowers peak memory; the effective batch is
    kept by raising gradient accumulation whenever the micro-batch shrinks."""
    micro = int(evidence.setting("training.micro_batch_size", 1))
    accumulation = int(evidence.setting("training.gradient_accumulation_steps", 1))
    length = int(evidence.setting("training.max_seq_length", 1024))
    checkpointing = evidence.setting("training.gradient_checkpointing") == "on"
    candidates: list[list[str]] = []
    if not checkpointing:
        candidates.append(["training.gradient_checkpointing=on"])
    size = micro
    while size > 1:
        size //= 2
        batch = [f"training.micro_batch_size={size}", f"training.gradient_accumulation_steps={accumulation * micro // size}"]
        candidates.append(batch if checkpointing else batch + ["training.gradient_checkpointing=on"])
    if length > 256:
        candidates.append([f"training.max_seq_length={length // 2}"])
    return candidates


def memory_overrides(evidence: RunEvidence) -> tuple[list[str], list[str]]:
    """The overrides to try first and the advice lines explaining them."""
    candidates = candidate_changes(evidence)
    if not candidates:
        return [], ["micro-batch 1 with gradient checkpointing still did not fit: use a larger GPU or a smaller model"]
    advice = ["options, least intrusive first: " + "; ".join(" ".join(c) for c in candidates)]
    return candidates[0], advice
