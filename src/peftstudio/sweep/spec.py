"""The sweep file: its schema, and its check against the run schema before any trial runs.

    method: bayes            # bayes (TPE) | random | grid
    metric: {name: eval/loss, goal: minimize}
    parameters:
      optim.learning_rate: {distribution: log_uniform_values, min: 1e-4, max: 1e-2}
      peft.r: {values: [8, 16]}
    base: {training.num_batches: 40}      # or a list of overrides: [peft=dora, ...]
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from peftstudio.config.compose import ALL_GROUPS, read_yaml
from peftstudio.config.introspect import find_field
from peftstudio.config.overrides import override_text
from peftstudio.config.validate import load_config
from peftstudio.errors import Problem, UserError

METRICS = {"eval/loss": "eval_loss", "eval/perplexity": "eval_perplexity", "train/loss": "loss"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Metric(_Strict):
    name: Literal["eval/loss", "eval/perplexity", "train/loss"] = "eval/loss"
    """The metric each trial is scored by: its value at the end of the trial."""
    goal: Literal["minimize", "maximize"] = "minimize"
    """Whether lower or higher is better."""

    @property
    def record_key(self) -> str:
        return METRICS[self.name]


class Parameter(_Strict):
    values: list[Any] | None = None
    """Explicit choices (required for method: grid)."""
    distribution: Literal["uniform", "log_uniform_values", "int_uniform"] | None = None
    """Sample between min and max: uniform, log-uniform, or uniform integers."""
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Parameter":
        if (self.values is None) == (self.distribution is None):
            raise ValueError("give either `values: [...]` or `distribution` with `min` and `max`")
        if self.values is not None and not self.values:
            raise ValueError("`values` must not be empty")
        if self.distribution is not None:
            if self.min is None or self.max is None or self.min >= self.max:
                raise ValueError("a distribution needs `min` < `max`")
            if self.distribution == "log_uniform_values" and self.min <= 0:
                raise ValueError("log_uniform_values needs `min` > 0")
        return self

    def probe_values(self) -> list[Any]:
        """Values checked against the run schema before the sweep: every choice, or both ends."""
        if self.values is not None:
            return list(self.values)
        ends = [self.min, self.max]
        return [int(v) for v in ends] if self.distribution == "int_uniform" else ends


class Pruner(_Strict):
    type: Literal["median", "none"] = "median"
    """median: stop a trial whose eval loss is worse than the median of earlier trials at the same step."""
    n_startup_trials: int = Field(default=2, ge=0)
    """Trials that always run to the end before pruning starts."""
    n_warmup_steps: int = Field(default=0, ge=0)
    """Steps of each trial that are never pruned."""


class SweepSpec(_Strict):
    method: Literal["bayes", "random", "grid"]
    """bayes: Optuna's TPE sampler; random; grid: every combination of `values`."""
    metric: Metric = Field(default_factory=Metric)
    parameters: dict[str, Parameter] = Field(min_length=1)
    """Swept keys (dotted run-config keys, or a group such as peft) and their values."""
    base: dict[str, Any] | list[str] = Field(default_factory=dict)
    """Overrides applied to every trial: a mapping of key: value, or a list of override strings."""
    pruner: Pruner = Field(default_factory=Pruner)
    seed: int = 0
    """Seed of the sampler, so the same sweep file proposes the same trials."""
    name: str | None = None
    """Study name in the SQLite file; defaults to the sweep file's name."""

    @model_validator(mode="after")
    def _grid_needs_values(self) -> "SweepSpec":
        if self.method == "grid":
            continuous = [k for k, p in self.parameters.items() if p.values is None]
            if continuous:
                raise ValueError(f"method grid needs `values` for every parameter; {', '.join(continuous)} has a distribution")
        return self

    def base_overrides(self) -> list[str]:
        if isinstance(self.base, list):
            return list(self.base)
        return [override_text(key, value) for key, value in self.base.items()]

    def grid(self) -> dict[str, list[Any]]:
        return {key: list(p.values or []) for key, p in self.parameters.items()}

    def grid_size(self) -> int:
        return len(list(itertools.product(*self.grid().values()))) if self.method == "grid" else 0


def load_sweep(path: Path) -> SweepSpec:
    """Read and validate a sweep file, then check every swept value against the run schema."""
    path = Path(path)
    if not path.is_file():
        raise UserError(Problem(str(path), "sweep file not found", "pass the path of a sweep YAML file"))
    raw, _ = read_yaml(path)  # safe loader, hostile files refused as for --config
    try:
        spec = SweepSpec.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        raise UserError([_problem(path, item) for item in error.errors()], headline=f"invalid sweep file {path}")
    check_against_run_schema(spec, path)
    return spec


def _problem(path: Path, item: dict) -> Problem:
    key = ".".join(str(part) for part in item["loc"])
    if item["type"] == "extra_forbidden":
        return Problem(f"{path}: {key}", "unknown key", "allowed: method, metric, parameters, base, pruner, seed, name")
    message = item["msg"].removeprefix("Value error, ")
    return Problem(f"{path}: {key or 'top level'}", f"{item.get('input')!r}: {message}" if key else message,
                   "see the sweep file shape in `peftstudio sweep --help`")


def check_against_run_schema(spec: SweepSpec, path: Path) -> None:
    """Every parameter a real key (or group), every value valid with the base overrides."""
    problems = []
    for key, parameter in spec.parameters.items():
        if key not in ALL_GROUPS and (find_field(key) is None or find_field(key).is_section):
            problems.append(Problem(f"{path}: parameters.{key}", "not a peftstudio config key or group",
                                    "use a dotted key such as optim.learning_rate (see `peftstudio explain training`)"))
    if problems:
        raise UserError(problems, headline=f"invalid sweep file {path}")
    base = spec.base_overrides()
    load_config(base)
    for key, parameter in spec.parameters.items():
        for value in parameter.probe_values():
            try:
                load_config(base + [override_text(key, value)])
            except UserError as error:
                problems += [Problem(f"{path}: parameters.{key}", f"value {value!r}: {p.message}", p.fix)
                             for p in error.problems]
    if problems:
        raise UserError(problems, headline=f"invalid sweep file {path}")
