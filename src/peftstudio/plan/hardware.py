"""What machine the run is planned for, as a plain data object.

`detect()` reads the real machine; resolution takes a `HardwareProfile` as an argument and
never looks at the machine itself, so tests pass fake profiles (an H100, a laptop, a CPU).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

AcceleratorKind = Literal["cuda", "mps", "cpu"]


# CPU flags that mean bfloat16 matrix units (a dense bf16 matmul then beats fp32 several-fold).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class HardwareProfile:
    """The machine a run is planned for. Memory lists are per device; MPS reports the unified
    memory of the Mac; a CPU-only machine has device_count 0."""

    accelerator: AcceleratorKind
    device_count: int
    device_names: list[str] = field(default_factory=list)
    device_memory_bytes: list[int] = field(default_factory=list)
    compute_capability: str | None = None
    gpu_bf16: bool = False
    cpu_bf16: bool = False
    cpu_cores: int = 1
    ram_bytes: int = 0
    disk_free_bytes: int = 0
    flash_attention_available: bool = False
    device_free_memory_bytes: list[int] = field(default_factory=list)
    bitsandbytes_available: bool = False
    cpu_bf16_flags: list[str] = field(default_factory=list)
    cpu_name: str = ""
    ram_available_bytes: int = 0
    # Measured GFLOP/s per precision ("fp32", "bf16") and width ("512") of an MLP block with a
    # LoRA adapter, forward and backward, as training runs it (`cpu_matmul_probe`); empty when
    # not measured (GPU machines, tests that do not fake it).
    cpu_matmul_gflops: dict[str, dict[str, float]] = field(default_factory=dict)
    # Milliseconds per probe-block step by precision, width and thread count ({"fp32": {"512":
    # {"1": 31.0, "2": 18.2}}}), measured once per machine (`cpu_probes`); empty when not measured.
    cpu_thread_ms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Milliseconds of a packed row's attention, forward and backward, by precision and kernel
    # ({"bf16": {"masked": 21.6, "per_sample": 11.8}}): one SDPA call under the row's
    # block-diagonal mask, or one causal fp32 call per sample (`cpu_attention_probe`); measured
    # once per machine with cpu_thread_ms; decides plan.resolve.cpu_fast_paths' packed_attention.
    cpu_attention_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def device_memory(self) -> int:
        """Memory of one device (the smallest, if they differ): what one training process gets.
        For a CPU-only machine, the RAM."""
        return min(self.device_memory_bytes) if self.device_memory_bytes else self.ram_bytes

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bf16 matrix flags (AVX512-BF16, AMX) the CPU advertises."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [flag for flag in CPU_BF16_FLAGS if flag in flags]


def cpu_has_bf16_units() -> bool:
    """True when the CPU advertises bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return any(flag in cpu_bf16_flags() for flag in ("avx512_bf16", "amx_bf16"))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _available_ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _ram_bytes()


# Widths the CPU probe measures, from the embedded model's 128 up; wider models read the last.
PROBE_WIDTHS = (128, 256, 512, 1024)
PROBE_TOKENS = 256


PROBE_FILE = "cpu-matmul-probe-{key}.json"


def probe_path(cache_dir: Path, key: str) -> Path:
    """Where the probe measured on `key` is cached: one file per machine key, so the workers of a
    multi-process run (one thread each, another key) never evict the launcher's measurement."""
    import hashlib

    return cache_dir / PROBE_FILE.format(key=hashlib.sha256(key.encode()).hexdigest()[:16])


def probe_machine_key() -> str:
    """What a cached probe was measured on: another CPU, thread count or torch measures again."""
    import torch

    return f"{_cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__} | lora-mlp-block paired"


def cpu_probes(cache_dir: Path | None = None) -> dict[str, dict]:
    """This machine's CPU measurements, each taken once and then read from
    `cache_dir`/cpu-matmul-probe-<key>.json (CPU name, threads, torch version: another of them
    measures again; deleting the file does too), so that every `auto` they decide comes out the
    same on every run here and runs stay bit-for-bit repeatable:
    - "gflops": `cpu_matmul_probe`, which decides training.precision;
    - "thread_ms": `cpu_thread_probe`, which decides training.cpu_threads;
    - "attention_ms": `cpu_attention_probe`, which decides how a packed row attends (measured
      again when model/fast_paths.py's REVISION changed since: that kernel is one of them).
    A part missing from an older file is measured and added."""
    import json

    from peftstudio.files import write_json
    from peftstudio.model.fast_paths import REVISION
    from peftstudio.settings import cache_root

    key = probe_machine_key()
    path = probe_path(cache_dir or cache_root(), key)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("kernel_revision") != REVISION:
            cached.pop("attention_ms", None)
        probes = {part: cached[part] for part in ("gflops", "thread_ms", "attention_ms") if part in cached} \
            if cached.get("machine") == key else {}
    except (OSError, ValueError):
        probes = {}
    measure = {"gflops": cpu_matmul_probe, "thread_ms": cpu_thread_probe, "attention_ms": cpu_attention_probe}
    missing = [part for part in measure if part not in probes]
    for part in missing:
        probes[part] = measure[part]()
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"machine": key, "kernel_revision": REVISION, **probes})
    return probes


def cpu_matmul_probe() -> dict[str, dict[str, float]]:
    """GFLOP/s of this CPU in fp32 and under bf16 autocast at each of PROBE_WIDTHS, for what a
    training step spends its matmuls on: a frozen up and down projection (width -> 3 x width ->
    width, SiLU between) with a rank-16 fp32 LoRA adapter, forward and backward, casts included.
    A bare matmul would mislead: on AMX CPUs bf16 multiplies 60x faster at width 128, yet the
    casts and small operations around it make a narrow model train slower in bf16. 7 paired
    repeats after 2 warm-ups, all threads; a few seconds (cached by `cpu_probes`)."""
    gflops: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}}
    for width in PROBE_WIDTHS:
        gflops["fp32"][str(width)], gflops["bf16"][str(width)] = _block_gflops(width)
    return gflops


def _block_gflops(width: int, repeats: int = 7) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s of the probe block at `width`. Each repeat times an fp32 step and a
    bf16 step back to back; fp32 keeps its best time and bf16 is that times the median of the
    per-pair speedups, so that another process loading the CPU for a moment (this project's
    machines are shared) shifts neither the figure nor the ratio much."""
    import statistics
    import time

    steps = {bf16: _probe_block(width, bf16) for bf16 in (False, True)}
    for step in steps.values():  # kernel selection, page faults
        step(), step()
    best_fp32, speedups = float("inf"), []
    for _ in range(repeats):
        seconds = {}
        for bf16, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[bf16] = time.perf_counter() - start
        best_fp32 = min(best_fp32, seconds[False])
        speedups.append(seconds[False] / seconds[True])
    fp32 = probe_block_flops(width) / best_fp32 / 1e9
    return round(fp32, 1), round(fp32 * statistics.median(speedups), 1)


def _probe_block(width: int, bf16: bool):
    import torch
    from torch.nn.functional import linear, silu

    generator = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32  # frozen weights are loaded in the run's precision
    up = torch.randn(3 * width, width, generator=generator).to(dtype)
    down = torch.randn(width, 3 * width, generator=generator).to(dtype)
    lora_a = (torch.randn(16, width, generator=generator) * 0.01).requires_grad_()
    lora_b = torch.zeros(3 * width, 16, requires_grad=True)
    inputs = torch.randn(PROBE_TOKENS, width, generator=generator).to(dtype)

    def step() -> None:
        x = inputs.detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = linear(x, up) + linear(linear(x, lora_a), lora_b)
            out = linear(silu(hidden), down)
        out.float().sum().backward()

    return step


# Widths the thread probe times: the embedded model's and the benchmark model's (the nearest decides).
THREAD_PROBE_WIDTHS = (128, 512)


def cpu_thread_probe(repeats: int = 5) -> dict[str, dict[str, dict[str, float]]]:
    """Median ms per probe-block step (`_probe_block`) with 1 thread and with torch's thread
    count (one per core unless the process was given fewer; {} when that is 1 already), per
    precision and THREAD_PROBE_WIDTHS width, the two thread counts alternating so that a
    moment of load from other processes falls on both. About half a second on 2 cores."""

    import torch

    previous = torch.get_num_threads()
    if previous == 1:
        return {}
    counts = [1, previous]
    table: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for precision in ("fp32", "bf16"):
            for width in THREAD_PROBE_WIDTHS:
                step = _probe_block(width, precision == "bf16")
                step()  # kernel selection, page faults
                table.setdefault(precision, {})[str(width)] = {
                    str(count): round(seconds * 1e3, 2)
                    for count, seconds in alternating_medians(dict.fromkeys(counts, step), repeats,
                                                              before=torch.set_num_threads).items()}
    finally:
        torch.set_num_threads(previous)
    return table


def alternating_medians(steps: dict, repeats: int, warm_ups: int = 0, before=None) -> dict:
    """Median seconds of each of `steps` (key -> callable), the steps taking turns within each
    repeat so that a moment of load from other processes falls on all of them alike, after
    `warm_ups` untimed rounds; `before(key)` runs untimed ahead of each call (e.g. setting the
    thread count the key names, which it then leaves set)."""
    import statistics
    import time

    times: dict = {key: [] for key in steps}
    for round_ in range(warm_ups + repeats):
        for key, step in steps.items():
            if before is not None:
                before(key)
            start = time.perf_counter()
            step()
            if round_ >= warm_ups:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(seconds) for key, seconds in times.items()}


def probe_block_flops(width: int, tokens: int = PROBE_TOKENS) -> float:
    """FLOPs the probe block's GFLOP/s count: the two frozen projections, forward and input gradient."""
    return 2 * tokens * width * 3 * width * 4


# A packed row of 8 samples (739 tokens, the benchmark workload's mix of lengths) at 8 heads of 64.
ATTENTION_PROBE_LENGTHS = (40, 300, 25, 120, 60, 90, 70, 34)


def cpu_attention_probe(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median ms of a packed row's attention, forward and backward, all threads, per precision:
    "masked", one SDPA call under the row's block-diagonal causal mask (what transformers' sdpa
    does with a packed row), and "per_sample", one causal fp32 call per sample
    (model/fast_paths.py: per_sample_attention), the two alternating. About a second."""

    import torch

    from peftstudio.model.fast_paths import per_sample_attention

    lengths = ATTENTION_PROBE_LENGTHS
    total = sum(lengths)
    bounds = [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    mask = torch.zeros(total, total, dtype=torch.bool)
    for start, end in zip(bounds, bounds[1:]):
        mask[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
    generator = torch.Generator().manual_seed(0)
    table: dict[str, dict[str, float]] = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        q, k, v = (torch.randn(1, 8, total, 64, generator=generator).to(dtype).requires_grad_() for _ in range(3))
        kernels = {
            "masked": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            "per_sample": lambda: per_sample_attention(q, k, v, bounds)}
        steps = {name: lambda attend=attend: attend().float().sum().backward() for name, attend in kernels.items()}
        # one warm-up round: kernel selection, page faults
        medians = alternating_medians(steps, repeats, warm_ups=1)
        table[precision] = {name: round(seconds * 1e3, 2) for name, seconds in medians.items()}
    return table


def detect(output_dir: str | Path = ".") -> HardwareProfile:
    """Probe the machine: accelerator, memory, bf16 support, CPU, RAM, free disk."""
    import importlib.util

    import torch

    path = Path(output_dir).expanduser()
    while path != path.parent:
        try:
            if path.exists():
                break
        except OSError:  # a name too long for the filesystem: plan's path check names it
            pass
        path = path.parent
    flags = cpu_bf16_flags()
    common = dict(
        cpu_bf16=any(flag in flags for flag in ("avx512_bf16", "amx_bf16")),
        cpu_cores=os.cpu_count() or 1,
        ram_bytes=_ram_bytes(),
        ram_available_bytes=_available_ram_bytes(),
        disk_free_bytes=shutil.disk_usage(path).free,
        flash_attention_available=importlib.util.find_spec("flash_attn") is not None,
        bitsandbytes_available=importlib.util.find_spec("bitsandbytes") is not None,
        cpu_bf16_flags=flags,
        cpu_name=_cpu_name(),
    )
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(count)]
        return HardwareProfile(
            accelerator="cuda",
            device_count=count,
            device_names=[p.name for p in props],
            device_memory_bytes=[p.total_memory for p in props],
            compute_capability=f"{props[0].major}.{props[0].minor}",
            gpu_bf16=torch.cuda.is_bf16_supported(),
            device_free_memory_bytes=[torch.cuda.mem_get_info(i)[0] for i in range(count)],
            **common,
        )
    if torch.backends.mps.is_available():
        # Unified memory: the GPU shares the Mac's RAM. bf16 on MPS needs macOS 14.
        return HardwareProfile("mps", 1, ["Apple MPS"], [common["ram_bytes"]],
                               gpu_bf16=torch.backends.mps.is_macos_or_newer(14, 0),
                               device_free_memory_bytes=[common["ram_available_bytes"]], **common)
    probes = cpu_probes()
    return HardwareProfile("cpu", 0, device_free_memory_bytes=[], cpu_matmul_gflops=probes["gflops"],
                           cpu_thread_ms=probes["thread_ms"], cpu_attention_ms=probes["attention_ms"], **common)
