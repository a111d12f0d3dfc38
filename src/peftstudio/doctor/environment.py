"""Machine checks: accelerator and driver, tokens (present or not, never their values)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from peftstudio.config.schema import EMBEDDED_MODEL_ID, RunConfig
from peftstudio.doctor.result import Check
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.settings import DotenvOrigin, dotenv_origin, token_environment
from peftstudio.units import format_gib


def check_accelerator(hardware: HardwareProfile, config: RunConfig | None) -> Check:
    wanted = config.device if config is not None else "auto"
    if hardware.accelerator == "cuda":
        names = ", ".join(f"{n} ({format_gib(m, 0)})" for n, m in zip(hardware.device_names, hardware.device_memory_bytes))
        return Check("accelerator", "pass", f"CUDA: {names}; compute capability {hardware.compute_capability}; "
                                            f"bf16 {'yes' if hardware.gpu_bf16 else 'no (fp16 with loss scaling)'}; {driver_text()}")
    if wanted == "cuda":
        return Check("accelerator", "fail", f"device=cuda but no CUDA GPU ({hardware.accelerator} only)",
                     "run on a CUDA machine (see `peftstudio launch`), or set device=auto")
    if hardware.accelerator == "mps":
        return Check("accelerator", "pass", "Apple GPU (MPS)")
    small = config is None or config.model.name_or_path == EMBEDDED_MODEL_ID
    return Check("accelerator", "pass" if small else "warn",
                 f"no GPU: CPU training with {hardware.cpu_cores} cores" + ("" if small else " (very slow for this model)"),
                 "" if small else "use a GPU machine; `peftstudio plan` prices the options")


def driver_text() -> str:
    """The NVIDIA driver and the CUDA version torch was built for."""
    try:
        import torch

        built = f"torch built for CUDA {torch.version.cuda}"
    except ImportError:
        built = "torch not importable"
    if shutil.which("nvidia-smi") is None:
        return f"driver unknown (no nvidia-smi); {built}"
    try:
        output = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        output = []
    return f"driver {output[0] if output else 'unknown'}; {built}"


def check_tokens(config: RunConfig | None, environ: dict[str, str] | None = None) -> list[Check]:
    """Whether HF_TOKEN and WANDB_API_KEY are set (in `environ`, by default this process's
    environment). Values are never read into the result."""
    environ = token_environment() if environ is None else environ
    hub_model = config is not None and _is_hub_id(config.model.name_or_path)
    hf_set = bool(environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN")) or _hf_token_file(environ).is_file()
    if hf_set:
        hf = Check("HF_TOKEN", "pass", "set (value not shown)")
    elif hub_model:
        hf = Check("HF_TOKEN", "warn", f"not set; {config.model.name_or_path} may be gated on the hub",
                   "export HF_TOKEN=... (or `huggingface-cli login`) after accepting the model's licence")
    else:
        hf = Check("HF_TOKEN", "pass", "not set (not needed: the model is local or embedded)")
    wandb = Check("WANDB_API_KEY", "pass", "set (value not shown)") if environ.get("WANDB_API_KEY") else \
        Check("WANDB_API_KEY", "pass", "not set: Weights & Biases, if used, logs offline")
    comet = Check("COMET_API_KEY", "pass", "set (value not shown)") if environ.get("COMET_API_KEY") else \
        Check("COMET_API_KEY", "pass", "not set: Comet, if used, logs offline")
    return [hf, wandb, comet]


def _hf_token_file(environ: dict[str, str]) -> Path:
    home = environ.get("HF_HOME") or os.path.join(environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home) / "token"


def _is_hub_id(name: str) -> bool:
    return name != EMBEDDED_MODEL_ID and not Path(name).expanduser().exists() and name.count("/") == 1


def check_dotenv(origin: DotenvOrigin | None = None) -> Check:
    """Which variables came from the .env file (names only: a value is never read into the
    result), and which of its names the shell had already set."""
    origin = dotenv_origin() if origin is None else origin
    if origin.path is None:
        return Check(".env", "pass", f"none read ({origin.skipped})")
    names = ", ".join(origin.names) if origin.names else "none (every name in it was already set)"
    detail = f"{origin.path}: set {names}"
    if origin.shadowed:
        detail += f"; the shell's value kept for {', '.join(origin.shadowed)}"
    return Check(".env", "pass", detail)
