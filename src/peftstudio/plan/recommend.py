"""What `detect` recommends for a machine: the default run resolved against it, and the
accelerate config, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from peftstudio.config.validate import load_config
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.platforms import recommend_accelerate_config
from peftstudio.plan.resolve import resolve


@dataclass(frozen=True)
class Recommendation:
    key: str
    value: str
    reason: str


def recommend(hardware: HardwareProfile) -> list[Recommendation]:
    """Platform preset, device, precision, attention, gradient checkpointing and accelerate
    config for the default run on `hardware`, each with its reason."""
    config, _ = load_config([])
    resolution = resolve(config, hardware, None)
    values = resolution.config
    picked = [Recommendation(key, str(_dotted(values, key)), resolution.reasons[key])
              for key in ("platform", "device", "training.precision", "training.attention")
              if key in resolution.reasons]
    accelerate, reason = recommend_accelerate_config(hardware)
    return [*picked, Recommendation("accelerate_config", accelerate, reason)]


def _dotted(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
