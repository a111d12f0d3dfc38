"""The price file: GPU types (memory, dense peak) and each provider's hourly price range.

The shipped file is plan/providers.yaml; `--price-file` points at another with the same shape.
It is validated like a config: a wrong key or value is a user error naming it.
"""

from __future__ import annotations

import datetime
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from peftstudio.errors import Problem, UserError

SHIPPED_PRICE_FILE = Path(__file__).with_name("providers.yaml")
PROVIDERS = ("runpod", "lambda", "vast")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuType(_Strict):
    memory_gib: float = Field(gt=0)
    peak_tflops: float = Field(gt=0)
    bf16: bool = True
    skypilot: str
    match: list[str] = Field(default_factory=list)
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)
    """Memory bandwidth (GB/s): what paces token-by-token generation (GRPO); unknown: FLOPs only."""


class Efficiency(_Strict):
    default: float = Field(gt=0, le=1)
    """Share of a GPU's dense peak a LoRA run reaches (also rsLoRA and PiSSA: the same step)."""
    quantized_4bit: float = Field(gt=0, le=1)
    """The same for LoRA on 4-bit base weights (QLoRA)."""
    dora: float | None = Field(default=None, gt=0, le=1)
    """The same for DoRA; unset: `default`."""
    cpu: float = Field(gt=0, le=1)
    decode: float = Field(default=0.3, gt=0, le=1)
    """Share of the memory bandwidth Hugging Face `generate` reaches while decoding (GRPO)."""

    def on_gpu(self, dora: bool, quantization: str) -> float:
        """The share of a GPU's dense peak a LoRA run reaches, or a DoRA run (`dora`,
        plan.architecture.uses_dora); on 4-bit weights (`quantization` nf4/fp4) the LoRA ratio
        quantized_4bit / default applies on top, so QDoRA is dora x that ratio."""
        share = (self.dora or self.default) if dora else self.default
        return share * self.quantized_4bit / self.default if quantization in ("nf4", "fp4") else share


class PriceFile(_Strict):
    updated: datetime.date
    currency: str = "USD"
    efficiency: Efficiency
    cpu_gflops_per_core: float = Field(gt=0)
    gpus: dict[str, GpuType]
    providers: dict[str, dict[str, tuple[float, float]]]
    source: str = ""

    @model_validator(mode="after")
    def _known_gpus(self) -> "PriceFile":
        for provider, prices in self.providers.items():
            for gpu, (low, high) in prices.items():
                if gpu not in self.gpus:
                    raise ValueError(f"providers.{provider}.{gpu}: unknown GPU type (add it under gpus:)")
                if not 0 <= low <= high:
                    raise ValueError(f"providers.{provider}.{gpu}: price range must be [low, high] with 0 <= low <= high")
        return self

    def gpu_for_device(self, device_name: str) -> str | None:
        """The GPU type whose `match` substrings name this CUDA device (first match wins)."""
        for name, gpu in self.gpus.items():
            if any(token.lower() in device_name.lower() for token in gpu.match):
                return name
        return None


def load_prices(path: Path | None = None) -> PriceFile:
    """The shipped price file, or `path`; validated."""
    path = Path(path) if path is not None else SHIPPED_PRICE_FILE
    return _load(path.resolve())


@lru_cache(maxsize=4)
def _load(path: Path) -> PriceFile:
    if not path.is_file():
        raise UserError(Problem(str(path), "price file not found", "pass an existing YAML file to --price-file"))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PriceFile.model_validate({**(raw or {}), "source": str(path)})
    except yaml.YAMLError as error:
        raise UserError(Problem(str(path), f"not valid YAML: {str(error).splitlines()[0]}", "fix the YAML syntax"))
    except ValidationError as error:
        raise UserError([Problem(f"{path}: {'.'.join(map(str, item['loc'])) or 'top level'}",
                                 item["msg"].removeprefix("Value error, "),
                                 f"see the shipped example {SHIPPED_PRICE_FILE}") for item in error.errors()],
                        headline=f"invalid price file {path}")
