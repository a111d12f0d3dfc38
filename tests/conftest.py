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
from peftstudio.units import GIB  # noqa: E402

CPU = HardwareProfile("cpu", 0, cpu_cores=2, ram_bytes=24 * GIB, disk_free_bytes=100 * GIB,
                      ram_available_bytes=20 * GIB, bitsandbytes_available=True, cpu_name="Intel Xeon (fake)")
CPU_AMX = HardwareProfile("cpu", 0, cpu_bf16=True, cpu_cores=2, ram_bytes=24 * GIB, disk_free_bytes=100 * GIB,
                          ram_available_bytes=20 * GIB, bitsandbytes_available=True,
                          cpu_bf16_flags=["avx512_bf16", "amx_bf16", "amx_tile"], cpu_name="Intel Xeon Sapphire Rapids (fake)",
                          # a probe where bf16 pays at 1B-8B widths (2.2x) and not at the embedded model's (1.1x)
                          cpu_matmul_gflops={"fp32": {"128": 40.0, "512": 90.0, "1024": 100.0},
                                             "bf16": {"128": 44.0, "512": 150.0, "1024": 220.0}})


def gpus(name: str, memory_gib: float, count: int = 1, capability: str = "8.0", bf16: bool = True,
         flash_attention: bool = True) -> HardwareProfile:
    """A fake CUDA machine with `count` identical GPUs."""
    memory = int(memory_gib * GIB)
    return HardwareProfile("cuda", count, [name] * count, [memory] * count, capability, gpu_bf16=bf16, cpu_cores=16,
                           ram_bytes=128 * GIB, disk_free_bytes=100 * GIB, flash_attention_available=flash_attention,
                           device_free_memory_bytes=[memory - GIB // 2] * count, bitsandbytes_available=True,
                           ram_available_bytes=120 * GIB)


H100 = gpus("NVIDIA H100 80GB HBM3", 80, capability="9.0")
A100_40GB = gpus("NVIDIA A100-SXM4-40GB", 40)
RTX4090 = gpus("NVIDIA GeForce RTX 4090", 24, capability="8.9", flash_attention=False)
RTX3070 = gpus("NVIDIA GeForce RTX 3070", 8, capability="8.6", flash_attention=False)
T4 = gpus("Tesla T4", 16, capability="7.5", bf16=False, flash_attention=False)
TWO_A100 = gpus("NVIDIA A100-SXM4-80GB", 80, count=2)
EIGHT_H100 = gpus("NVIDIA H100 80GB HBM3", 80, count=8, capability="9.0")
M4 = HardwareProfile("mps", 1, ["Apple MPS"], [32 * GIB], gpu_bf16=True, cpu_cores=10, ram_bytes=32 * GIB,
                     disk_free_bytes=100 * GIB, device_free_memory_bytes=[24 * GIB], ram_available_bytes=24 * GIB,
                     cpu_name="Apple M4 (fake)")
FAKE_PROFILES = {"cpu": CPU, "cpu_amx": CPU_AMX, "h100": H100, "a100_40gb": A100_40GB, "rtx4090": RTX4090,
                 "rtx3070": RTX3070, "t4": T4, "2xa100": TWO_A100, "8xh100": EIGHT_H100, "m4": M4}

def pin_cpu_probe(cache: Path) -> None:
    """The CPU probe that decides precision=auto measures a shared, loaded machine: a figure near
    the 1.3x bar would flip the embedded model between fp32 and bf16 from run to run, and with
    it the memory and losses tests assert. Tests run on a written result for this machine
    (bf16 no faster at any width: fp32), as a quiet measurement of the embedded width gives. The
    same for training.cpu_threads=auto (torch's own count, every core, is the faster) and the
    packed-row attention (the masked call, transformers' own, is the faster). tests/unit/test_resolve.py measures the probes themselves."""
    import json

    import torch

    from peftstudio.plan.hardware import PROBE_WIDTHS, THREAD_PROBE_WIDTHS, probe_machine_key, probe_path

    even = {str(width): 100.0 for width in PROBE_WIDTHS}
    threads = str(torch.get_num_threads())
    thread_ms = {str(width): {"1": 2.0, threads: 1.0} if threads != "1" else {"1": 1.0} for width in THREAD_PROBE_WIDTHS}
    key = probe_machine_key()
    cache.mkdir(parents=True, exist_ok=True)
    probe_path(cache, key).write_text(json.dumps({
        "machine": key, "gflops": {"fp32": even, "bf16": even}, "thread_ms": {"fp32": thread_ms, "bf16": thread_ms},
        "attention_ms": {"fp32": {"masked": 1.0, "per_sample": 2.0}, "bf16": {"masked": 1.0, "per_sample": 2.0}}}))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One embedded-model build per test session, shared by every subprocess through the env.
    PEFTSTUDIO_TEST_CACHE reuses a cache across sessions when set."""
    cache = Path(os.environ.get("PEFTSTUDIO_TEST_CACHE") or tmp_path_factory.mktemp("peftstudio-cache"))
    os.environ["PEFTSTUDIO_CACHE"] = str(cache)
    pin_cpu_probe(cache)
    from peftstudio.model.embedded import ensure_embedded_model

    ensure_embedded_model()
    return cache


SUBPROCESS_ARGS = ("--inject-fault", "training.distributed=", "training.num_processes=", "training.num_machines=")


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600,
            subprocess_only: bool = False) -> subprocess.CompletedProcess:
    """Run `peftstudio ARGS` as a user would, in `cwd`: through the console entry point `main()`
    in this process (a subprocess pays 8-10 s of torch/transformers imports per call on these
    2 cores), or in a real subprocess when the run is meant to be killed, signalled or raced
    (`--inject-fault`, `subprocess_only=True`), or when it launches worker processes, whose output
    goes to the real stdout, not to a captured one."""
    if subprocess_only or any(arg.startswith(SUBPROCESS_ARGS) for arg in args):
        return subprocess.run([sys.executable, "-m", "peftstudio", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=timeout)
    return _run_in_process(list(args), cwd, env or {})


def _run_in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`main()` with argv, cwd, environment and both streams swapped in and restored after, its
    exit code taken from SystemExit as the shell would see it."""
    import contextlib
    import io
    import logging

    from peftstudio import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["peftstudio", *args]
    code = 0
    try:
        _point_console_handlers(sys.stderr, err)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except Exception:  # noqa: BLE001 - `--debug` re-raises: the interpreter would print it and exit 1
        import traceback

        err.write(traceback.format_exc())
        code = 1
    finally:
        _point_console_handlers(err, sys.stderr)
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers
                                           if not isinstance(h, logging.FileHandler)]
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["peftstudio", *args], code, out.getvalue(), err.getvalue())


def _point_console_handlers(stream, to) -> None:
    """Library loggers' console handlers (transformers, datasets, root) that write to `stream`
    write to `to` instead: in a call they write to its captured stderr, as in a subprocess, and
    those a call created lazily go back to the real stderr after it. pytest's own stay put."""
    import logging

    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for handler in {h for logger in loggers for h in logger.handlers}:
        if (isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, (logging.FileHandler, logging._StderrHandler))
                and not type(handler).__module__.startswith("_pytest")
                and (handler.stream is stream or (stream is sys.stderr and handler.stream is sys.__stderr__))):
            handler.setStream(to)
