"""Shared test setup: offline, one embedded-model cache per session, fake hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from peftstudio.plan.hardware import HardwareProfile  # noqa: E402

GIB = 1024**3
CPU = HardwareProfile("cpu", 0, cpu_cores=2, ram_bytes=24 * GIB, disk_free_bytes=100 * GIB, bitsandbytes_available=True)
H100 = HardwareProfile("cuda", 1, ["NVIDIA H100 80GB HBM3"], [80 * GIB], "9.0", gpu_bf16=True, cpu_cores=16,
                       ram_bytes=128 * GIB, disk_free_bytes=100 * GIB, flash_attention_available=True,
                       bitsandbytes_available=True)
T4 = HardwareProfile("cuda", 1, ["Tesla T4"], [16 * GIB], "7.5", gpu_bf16=False, cpu_cores=8,
                     ram_bytes=32 * GIB, disk_free_bytes=100 * GIB)
M4 = HardwareProfile("mps", 1, ["Apple MPS"], [32 * GIB], gpu_bf16=True, cpu_cores=10, ram_bytes=32 * GIB)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One embedded-model build per test session, shared by every subprocess through the env.
    PEFTSTUDIO_TEST_CACHE reuses a cache across sessions when set."""
    cache = Path(os.environ.get("PEFTSTUDIO_TEST_CACHE") or tmp_path_factory.mktemp("peftstudio-cache"))
    os.environ["PEFTSTUDIO_CACHE"] = str(cache)
    from peftstudio.build.embedded import ensure_embedded_model

    ensure_embedded_model()
    return cache


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `peftstudio ARGS` as a user would, in `cwd`."""
    return subprocess.run([sys.executable, "-m", "peftstudio", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
