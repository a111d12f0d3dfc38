"""Checks of the run the config describes: data, directories, disk, hyperparameters."""

from __future__ import annotations

import tempfile
from pathlib import Path

from peftstudio.config.schema import RunConfig
from peftstudio.doctor.result import Check
from peftstudio.plan.checks import Findings
from peftstudio.plan.disk import checkpoint_disk_bytes
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.pipeline import Survey
from peftstudio.units import MIB, format_gib



def dataset_check(found: Survey) -> Check:
    """The data as planning read and checked it (exactly as `train` would)."""
    if found.data_problems:
        first = found.data_problems[0]
        more = f" (+{len(found.data_problems) - 1} more)" if len(found.data_problems) > 1 else ""
        return Check("dataset", "fail", f"{first.where}: {first.message}{more}", first.fix)
    data = found.data
    return Check("dataset", "pass", f"{data.source}: {data.format}, {len(data.train_rows)} train / "
                                    f"{len(data.validation_rows)} validation rows")


def check_writable(key: str, value: str) -> Check:
    """Try to create a file where the directory (or its nearest existing parent) is."""
    path = Path(value).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    name = f"training.{key} writable"
    if not existing.is_dir():
        return Check(name, "fail", f"{path}: {existing} is a file, not a directory", f"set training.{key} to a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".peftstudio-doctor-"):
            pass
    except OSError as error:
        return Check(name, "fail", f"{path}: cannot write in {existing} ({error.strerror or error})",
                     f"set training.{key} to a writable location, or fix the permissions of {existing}")
    return Check(name, "pass", f"{path} ({'exists' if path.exists() else f'will be created under {existing}'})")


def check_disk(config: RunConfig, hardware: HardwareProfile) -> Check:
    sizes = checkpoint_disk_bytes(config)
    free = hardware.disk_free_bytes
    if sizes is None:
        return Check("free disk", "warn", f"{format_gib(free)} free; checkpoint size unknown (no model.architecture)",
                     "add model.architecture numbers to estimate it")
    one, need = sizes
    detail = (f"{format_gib(free, 2)} free; checkpoints need up to {format_gib(need, 2)} "
              f"(keep {config.training.save_total_limit} of {one / MIB:.0f} MiB each, +1 being written, + adapter)")
    if need > free:
        return Check("free disk", "fail", detail, "free disk space, lower training.save_total_limit, or move "
                                                  "training.checkpoint_dir to a larger disk")
    if need > 0.8 * free:
        return Check("free disk", "warn", detail, "the disk will be nearly full; lower training.save_total_limit")
    return Check("free disk", "pass", detail)


def hyperparameter_checks(findings: Findings) -> list[Check]:
    """The plan's own cross-field checks, on the schedule planning computed: errors fail,
    warnings warn."""
    checks = [Check(f"config {p.where}", "fail", p.message, p.fix) for p in findings.errors + findings.environment]
    checks += [Check("config warning", "warn", text) for text in findings.warnings]
    return checks or [Check("hyperparameters", "pass", "every key valid and in range; no conflicting settings")]
