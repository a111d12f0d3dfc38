"""find-batch-size: the largest micro-batch that really fits, found by probing the device.

Each probe runs forward + backward + optimizer step on a batch of the longest sequence the
data produces (truncated to max_seq_length; with packing every row is full), so no later batch
can need more memory. The search is seeded by the memory estimator, grows while probes fit,
then bisects. Only divisors of the effective batch are tried, so gradient accumulation keeps
the effective batch exactly.

The out-of-memory signal is the device's own (torch.cuda.OutOfMemoryError), or a byte budget
(`budget_bytes`, from `--memory-budget`): a probe whose measured peak exceeds it takes the same
path as a real OOM. On CPU and MPS the budget defaults to 90% of the available RAM, and the
peak is measured by tracking every tensor storage alive during the probe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftstudio.config.schema import RunConfig
from peftstudio.data.tokenization import TokenizedData
from peftstudio.errors import EnvironmentProblem, Problem, UserError
from peftstudio.files import write_json
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.memory import estimate_memory
from peftstudio.train.probe import Probe, build_prober, release_memory
from peftstudio.units import format_gib

RAM_SHARE_FOR_CPU_PROBES = 0.9


@dataclass(frozen=True)
class BatchSizeResult:
    micro_batch_size: int
    gradient_accumulation_steps: int
    effective_batch: int
    seq_len: int
    seed: int
    seed_reason: str
    device: str
    budget_bytes: int | None
    budget_source: str
    probes: list[Probe] = field(default_factory=list)
    limited_by: str = ""
    sample: str = ""  # what each probe trains on (train/probe.py)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["probes"] = [probe.to_dict() for probe in self.probes]
        return values

    def write(self, path: Path) -> None:
        """Write the result as JSON (atomically: a temporary file renamed into place)."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())


def candidate_sizes(effective_batch: int, max_size: int | None) -> list[int]:
    """Micro-batch sizes that keep the effective batch exactly: its divisors, up to `max_size`."""
    limit = min(effective_batch, max_size or effective_batch)
    return [size for size in range(1, limit + 1) if effective_batch % size == 0]


def group_sizes(config: RunConfig, candidates: list[int], effective: int) -> list[int]:
    """GRPO keeps prompt groups whole: only micro-batches that are multiples of num_generations
    (TRL's auto_find_batch_size halves the batch and breaks them; this finder never does)."""
    if config.objective != "grpo":
        return candidates
    g = config.grpo.num_generations
    kept = [size for size in candidates if size % g == 0]
    if not kept:
        raise UserError(Problem("training.micro_batch_size", f"no micro-batch that divides the effective batch of "
                                f"{effective} completions is a multiple of grpo.num_generations={g} (up to {candidates[-1]})",
                                f"make micro_batch_size × gradient_accumulation_steps a multiple of {g}, or raise --max"))
    return kept


def search(candidates: list[int], seed: int, probe: Callable[[int], Probe]) -> tuple[int | None, list[Probe]]:
    """Largest candidate whose probe fits: start at the candidate nearest `seed` (at or below
    it), grow by doubling the step while probes fit, then bisect between the last fit and the
    first failure. Returns (size or None when even the smallest fails, probes in order)."""
    probes: list[Probe] = []
    index = max((i for i, size in enumerate(candidates) if size <= seed), default=0)
    fit, fail = -1, len(candidates)  # indexes known to fit / known not to fit
    step = 1
    while fit + 1 < fail:
        result = probe(candidates[index])
        probes.append(result)
        if result.fits:
            fit = index
            growing = fail == len(candidates)
            index = index + step if growing else (fit + fail) // 2
        else:
            fail = index
            shrinking = fit < 0
            index = index - step if shrinking else (fit + fail) // 2
        step *= 2
        if fit + 1 < fail:
            index = min(max(index, fit + 1), fail - 1)
    return (candidates[fit] if fit >= 0 else None), probes


def memory_budget(device: str, explicit: int | None, available_ram: int) -> tuple[int | None, str]:
    """The byte budget probes must stay under, and where it comes from (None: the device's own OOM)."""
    if explicit is not None:
        return explicit, "--memory-budget"
    if device == "cuda":
        return None, "the GPU's own out-of-memory error"
    return int(available_ram * RAM_SHARE_FOR_CPU_PROBES), f"{RAM_SHARE_FOR_CPU_PROBES:.0%} of the available RAM"


def find_batch_size(config: RunConfig, tokens: TokenizedData, hardware: HardwareProfile, *,
                    max_size: int | None = None, budget_bytes: int | None = None,
                    on_probe: Callable[[Probe], None] | None = None) -> BatchSizeResult:
    """Probe the device for the largest micro-batch of the resolved `config` that fits, keeping
    micro_batch_size × gradient_accumulation_steps. `tokens` is the plan's tokenized data: the
    worst-case sample comes from its training rows, tokenized as training sees them."""
    training = config.training
    effective = training.micro_batch_size * training.gradient_accumulation_steps
    candidates = group_sizes(config, candidate_sizes(effective, max_size), effective)
    budget, source = memory_budget(config.device, budget_bytes, hardware.ram_available_bytes or hardware.ram_bytes)
    prober, seq_len = build_prober(config, tokens, budget)
    prober_note = prober.note
    seed, seed_reason = estimator_seed(config, hardware, budget, candidates, seq_len)

    def probe(size: int) -> Probe:
        result = prober.probe(size)
        if on_probe is not None:
            on_probe(result)
        return result

    try:
        best, probes = search(candidates, seed, probe)
    finally:
        prober.release()
        release_memory()
    if best is None:
        raise EnvironmentProblem(Problem("training.micro_batch_size", f"even micro-batch 1 does not fit ({probes[-1].detail})",
                                         "run `peftstudio plan` for the overrides predicted to fit (shorter "
                                         "training.max_seq_length, gradient_checkpointing=on, peft=qlora)"))
    limited = "the effective batch" if best == candidates[-1] and (max_size is None or max_size >= effective) else (
        f"--max {max_size}" if best == candidates[-1] else "memory")
    return BatchSizeResult(best, effective // best, effective, seq_len, seed, seed_reason, config.device, budget, source,
                           probes, limited, prober_note)


def estimator_seed(config: RunConfig, hardware: HardwareProfile, budget: int | None, candidates: list[int],
                   seq_len: int) -> tuple[int, str]:
    """The largest candidate the memory estimate says fits: where the search starts."""
    limit = budget if budget is not None else hardware.device_memory
    seed = candidates[0]
    for size in candidates:
        try:
            estimate = estimate_memory(config, micro_batch_size=size, seq_len=seq_len)
        except UserError:
            return candidates[0], "no architecture numbers to estimate with: the search starts at the smallest"
        # a budget bounds the tensors a probe measures; device memory also holds the framework
        needed = estimate.tensor_bytes if budget is not None else estimate.total_bytes
        if needed > limit:
            break
        seed = size
    return seed, f"largest micro-batch the estimate fits in {format_gib(limit, 2)} at sequence {seq_len}"
