"""Python and package checks: versions against peftstudio's pins, and against each other's
declared requirements (trl's needs of transformers, peft's of torch, ...)."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
from typing import Callable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from peftstudio.doctor.result import Check

# The training stack; the last two are optional accelerators of it.
STACK = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")
OPTIONAL = {"bitsandbytes": "4-bit / 8-bit quantization (QLoRA) and 8-bit optimizers",
            "flash-attn": "training.attention=flash_attention_2 on CUDA GPUs"}


def installed_versions() -> dict[str, str]:
    versions = {}
    for name in (*STACK, *OPTIONAL):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def declared_requirements(name: str) -> list[str]:
    try:
        return list(metadata.requires(name) or [])
    except metadata.PackageNotFoundError:
        return []


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return Check("python", "fail", f"Python {version}", "use Python 3.11 or newer")
    return Check("python", "pass", f"Python {version} ({sys.executable})")


def check_packages(versions: dict[str, str] | None = None,
                   requirements: Callable[[str], list[str]] = declared_requirements, cuda: bool = False) -> list[Check]:
    """One check per stack package (installed, matching peftstudio's pin) plus one for the
    requirements the packages declare of each other. Both inputs are injectable for tests."""
    versions = installed_versions() if versions is None else versions
    pins = {r.name.lower(): r for r in _parse(requirements("peftstudio"))}
    checks = []
    for name in STACK:
        if name not in versions:
            checks.append(Check(f"package {name}", "fail", "not installed", f"pip install '{pins.get(name, name)}'"))
            continue
        pin = pins.get(name)
        if pin is not None and not _satisfies(pin, versions[name]):
            checks.append(Check(f"package {name}", "warn", f"{versions[name]}; peftstudio is tested with {pin}",
                                f"pip install '{pin}'"))
        else:
            checks.append(Check(f"package {name}", "pass", versions[name]))
    for name, purpose in OPTIONAL.items():
        # flash-attn matters only where it can run: a CUDA GPU.
        missing_matters = name not in versions and (cuda or name != "flash-attn")
        checks.append(Check(f"package {name}", "warn" if missing_matters else "pass",
                            f"{versions.get(name, 'not installed')} (for {purpose})",
                            f"pip install {name} to use it" if missing_matters else ""))
    checks.append(_mutual_compatibility(versions, requirements))
    return checks


def _mutual_compatibility(versions: dict[str, str], requirements: Callable[[str], list[str]]) -> Check:
    conflicts = []
    for name, version in versions.items():
        for requirement in _parse(requirements(name)):
            wanted = requirement.name.lower()
            if wanted in versions and requirement.marker is None and not _satisfies(requirement, versions[wanted]):
                conflicts.append(f"{name} {version} needs {requirement}, found {wanted} {versions[wanted]}")
    if conflicts:
        return Check("packages work together", "fail", "; ".join(conflicts),
                     "pip install the versions peftstudio pins: pip install -e . (or `make install`)")
    return Check("packages work together", "pass", "every declared requirement among " + ", ".join(sorted(versions)) + " is met")


def _parse(lines: list[str]) -> list[Requirement]:
    parsed = []
    for line in lines:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            requirement.marker = None
            parsed.append(requirement)
    return parsed


def _satisfies(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True
