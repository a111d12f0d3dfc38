"""Memory changes to try after an out-of-memory failure, checked with the memory estimator
against the device the run had."""

from __future__ import annotations


from peftstudio.diagnose.evidence import RunEvidence
from peftstudio.units import format_gib


def candidate_changes(evidence: RunEvidence) -> list[list[str]]:
    """Each candidate is a set of overrides that lowers peak memory, least intrusive first; the
    effective batch is kept by raising gradient accumulation whenever the micro-batch shrinks."""
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
        candidates.append(batch if checkpointing else ["training.gradient_checkpointing=on"] + batch)
    if length > 256:
        shorter = [f"training.max_seq_length={length // 2}"]
        candidates.append(shorter if checkpointing else ["training.gradient_checkpointing=on"] + shorter)
    return candidates


def memory_overrides(evidence: RunEvidence) -> tuple[list[str], list[str]]:
    """The overrides to try first and the advice lines explaining them, with the estimator's
    predicted peak for each candidate when the run's config and device are known."""
    candidates = candidate_changes(evidence)
    if not candidates:
        return [], ["micro-batch 1 with gradient checkpointing at this length still did not fit: "
                    "use a larger GPU (`peftstudio plan` prices them) or a smaller or quantized model"]
    predicted = _predict(evidence, candidates)
    if predicted is None:
        return candidates[0], ["options, least intrusive first: " + "; ".join(" ".join(c) for c in candidates)]
    device, current, peaks = predicted
    fitting = [c for c, peak in zip(candidates, peaks) if peak <= device]
    lines = [f"predicted peak {format_gib(current)} for this run on a {format_gib(device)} device"]
    lines += [f"{' '.join(c)} → {format_gib(peak)}{' (fits)' if peak <= device else ''}" for c, peak in zip(candidates, peaks)]
    if not fitting:
        lines.append("none of these fits: use a larger GPU or a quantized base (peft=qlora)")
    return (fitting[0] if fitting else candidates[-1]), lines


def _predict(evidence: RunEvidence, candidates: list[list[str]]) -> tuple[int, int, list[int]] | None:

    from peftstudio.errors import UserError
    from peftstudio.plan.memory import estimate_memory

    if evidence.plan is None:
        return None
    hardware, config = evidence.plan.hardware, evidence.plan.config
    try:
        peaks = [estimate_memory(_apply(config, c)).total_bytes for c in candidates]
        current = estimate_memory(config).total_bytes
    except (UserError, ValueError):  # no architecture numbers, or an override that does not validate
        return None
    return hardware.device_memory, current, peaks


def _apply(config, overrides: list[str]):
    from peftstudio.config.schema import RunConfig

    values = config.model_dump()
    for override in overrides:
        key, _, text = override.partition("=")
        section, _, name = key.rpartition(".")
        values[section][name] = int(text) if text.isdigit() else text
    return RunConfig.model_validate(values)
