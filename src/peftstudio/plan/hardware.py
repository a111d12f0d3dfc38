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


@dataclass(frozen=True)
class HardwareProfile:
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
    bitsandbytes_available: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_has_bf16_units() -> bool:
    """True when the CPU advertises bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def detect(output_dir: str | Path = ".") -> HardwareProfile:
    """Probe the machine: accelerator, memory, bf16 support, CPU, RAM, free disk."""
    import importlib.util

    import torch

    path = Path(output_dir).expanduser()
    while not path.exists() and path != path.parent:
        path = path.parent
    common = dict(
        cpu_bf16=cpu_has_bf16_units(),
        cpu_cores=os.cpu_count() or 1,
        ram_bytes=_ram_bytes(),
        disk_free_bytes=shutil.disk_usage(path).free,
        flash_attention_available=importlib.util.find_spec("flash_attn") is not None,
        bitsandbytes_available=importlib.util.find_spec("bitsandbytes") is not None,
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
            **common,
        )
    if torch.backends.mps.is_available():
        return HardwareProfile("mps", 1, ["Apple MPS"], [common["ram_bytes"]], gpu_bf16=True, **common)
    return HardwareProfile("cpu", 0, **common)
