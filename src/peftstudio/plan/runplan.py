"""The RunPlan: everything decided about a run before any weight is loaded, as a versioned
artifact that is handed on.

`plan` writes it (`--out plan.json`, and `RUN_DIR/plan.json` for every run), `train --plan`
executes it, the workers of a multi-process run execute it, and every later reader (diagnose,
studio, sweep, cost, throughput) loads it with `RunPlan.from_json` — never by parsing the
JSON or the YAML by hand. A plan of another format version is refused, never misread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from peftstudio.config.compose import resolve_environment
from peftstudio.config.introspect import flatten
from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.files import write_text
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.redact import scrub_tree, secrets_known

# Bump when the shape of plan.json changes; readers refuse every other version.
PLAN_VERSION = 2

# Where a value came from, lowest to highest precedence; "auto" was resolved against the
# hardware and the data, "measured" by probing the device.
OriginKind = Literal["default", "group", "experiment", "file", "override", "auto", "measured"]


@dataclass(frozen=True)
class Decision:
    """One key of the resolved config: its value, where it came from, and why.

    `reason` is the file:line or override that set it, or for `auto`/`measured` the one-line
    reason for the value chosen."""

    value: Any
    origin: OriginKind
    reason: str

    @property
    def chosen(self) -> bool:
        """True when peftstudio chose the value (auto or measured), not the user or a preset."""
        return self.origin in ("auto", "measured")

    def describe(self) -> str:
        return f"{self.origin}: {self.reason}" if self.chosen else self.reason


@dataclass(frozen=True)
class DataSummary:
    source: str
    format: str
    format_reason: str
    train_rows: int
    validation_rows: int
    sha256: str
    padding_waste: float
    split_reason: str = ""
    token_lengths: dict[str, int] = field(default_factory=dict)  # p50/p90/p99/max, before truncation
    tokens_measured: bool = True  # False: estimated from characters (tokenizer not available to plan)
    over_limit: int = 0
    overlong: str = "truncate"
    masked_dropped: int = 0
    chat_template: str = ""
    pad_token: str = ""
    answer_spans: str = ""  # how the trained answers are found in the chat template's rendering
    added_tokens: list[str] = field(default_factory=list)  # data.add_special_tokens=true: new vocabulary entries
    mean_tokens: float = 0.0  # tokens per training row after truncation, for the time estimate
    modality: str = "text"  # "image-text" when the rows carry images (issue 14)
    modality_reason: str = ""
    images: dict[str, Any] = field(default_factory=dict)  # image / text token counts (data/vision_tokens.py)


@dataclass(frozen=True)
class Schedule:
    mode: Literal["steps", "epochs"]
    reason: str
    optimizer_steps: int
    steps_per_epoch: int
    effective_batch: int


@dataclass(frozen=True)
class RunPlan:
    """`requested` is the validated config as the user composed it, `auto` intact;
    `config` is the same with every `auto` resolved; `decisions` says, per key of `config`,
    where its value came from."""

    requested: RunConfig
    config: RunConfig
    decisions: dict[str, Decision]
    hardware: HardwareProfile
    data: DataSummary
    schedule: Schedule
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""
    memory: dict[str, Any] | None = None  # plan.fit.FitReport.to_dict(): the estimate and what fits
    batch_size_search: dict[str, Any] | None = None  # train.batch_size.BatchSizeResult.to_dict(), when measured

    @property
    def identity(self) -> dict[str, Any]:
        return run_identity(self.config, self.data)

    def chosen(self) -> dict[str, Decision]:
        """The decisions peftstudio made itself (auto and measured), in config order."""
        return {key: decision for key, decision in self.decisions.items() if decision.chosen}

    def to_dict(self) -> dict[str, Any]:
        """The plan as saved and shown: values from the environment stay `${oc.env:NAME}` and
        URI credentials are masked (redact.py); `from_dict` resolves them again in memory."""
        return scrub_tree({
            "version": PLAN_VERSION,
            "requested": self.requested.model_dump(mode="json"),
            "config": self.config.model_dump(mode="json"),
            "decisions": {key: asdict(decision) for key, decision in self.decisions.items()},
            "hardware": self.hardware.to_dict(),
            "data": asdict(self.data),
            "schedule": asdict(self.schedule),
            "warnings": self.warnings,
            "fingerprint": self.fingerprint,
            "memory": self.memory,
            "batch_size_search": self.batch_size_search,
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "plan") -> "RunPlan":
        """The plan `to_dict` wrote; another version or a damaged plan is a user error."""
        if not isinstance(raw, dict) or "version" not in raw:
            raise UserError(Problem(source, "not a peftstudio plan (no \"version\")",
                                    "write one with: peftstudio plan OVERRIDES --out plan.json"))
        if raw["version"] != PLAN_VERSION:
            raise UserError(Problem(source, f"plan format version {raw['version']!r}; this peftstudio reads version "
                                            f"{PLAN_VERSION} only", "plan the run again with this version: peftstudio "
                                                                    "plan OVERRIDES --out plan.json"))
        try:
            return cls(
                requested=RunConfig.model_validate(resolve_environment(raw["requested"])),
                config=RunConfig.model_validate(resolve_environment(raw["config"])),
                decisions={key: Decision(**value) for key, value in raw["decisions"].items()},
                hardware=_dataclass(HardwareProfile, {key: value for key, value in raw["hardware"].items()
                                                      if key not in RETIRED_HARDWARE_FIELDS}),
                data=_dataclass(DataSummary, raw["data"]),
                schedule=_dataclass(Schedule, raw["schedule"]),
                warnings=list(raw["warnings"]),
                fingerprint=raw["fingerprint"],
                memory=raw["memory"],
                batch_size_search=raw["batch_size_search"],
            )
        except (KeyError, TypeError, ValueError) as error:  # pydantic's ValidationError is a ValueError
            raise UserError(Problem(source, f"damaged plan: {type(error).__name__}: {str(error).splitlines()[0]}",
                                    "plan the run again: peftstudio plan OVERRIDES --out plan.json")) from None

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> "RunPlan":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(Problem(source, f"not JSON: {error}", "pass a file that peftstudio plan --out wrote")) from None
        return cls.from_dict(raw, source)

    def write(self, path: Path) -> None:
        """Save the plan atomically: `read` gives it back exactly (owner-only when the run met a
        secret, see redact.secrets_known)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # `plan --out new_dir/plan.json`
        write_text(Path(path), self.to_json(), private=secrets_known())

    @classmethod
    def read(cls, path: Path) -> "RunPlan":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise UserError(Problem(str(path), f"cannot read the plan: {error.strerror or error}",
                                    "pass a file that peftstudio plan --out wrote")) from None
        return cls.from_json(text, str(path))


# Probes a plan of an earlier version recorded and this one no longer reads: a run planned then
# still resumes (cpu_op_us: the cost per operation of the CPU time model plan/step_probe.py replaced).
RETIRED_HARDWARE_FIELDS = ("cpu_op_us",)


def _dataclass(kind, raw: dict):
    """`kind(**raw)`, refusing keys the dataclass does not have instead of dropping them."""
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{kind.__name__} has no field(s) {', '.join(unknown)}")
    return kind(**raw)


def decisions_of(config: RunConfig, origins: dict[str, tuple[OriginKind, str]]) -> dict[str, Decision]:
    """One Decision per leaf key of `config`; `origins` gives (kind, reason) per key."""
    return {key: Decision(scrub_tree(value), *origins.get(key, ("default", "default")))
            for key, value in flatten(config.model_dump(mode="json")).items()}


def run_identity(config: RunConfig, data: DataSummary) -> dict[str, Any]:
    """What makes a run the same run for resuming: the model, the data and the adapter method."""
    return {
        "model": [config.model.name_or_path, config.model.revision],
        # data.modality is read from the data (its sha256 already): an older run without it still resumes
        "data": [data.sha256, data.format, config.data.model_dump(mode="json", exclude={"modality"})],
        "method": config.peft.model_dump(mode="json"),
    }


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
