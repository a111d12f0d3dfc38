"""Reward functions: one registry for GRPO training (and, later, evaluation metrics).

A reward scores each completion of a batch: `fn(prompts, completions, **columns)` returns one
float (or None: not applicable) per completion, the signature TRL's GRPOTrainer calls. Built-ins
read a reference column of the data (`answer` unless `column` says otherwise); user code is
named `python:module:function`. `check_rewards` finds every problem of a reward list by
reading the specs and importing user modules (no model, no data, no step run), so `plan`
reports them before anything loads. Completions arrive as text or as chat messages; both are
scored on their text.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from peftstudio.config.objective_schema import RewardSpec
from peftstudio.errors import Problem

DEFAULT_COLUMN = "answer"
# What each built-in needs besides the completion: a reference column, a pattern, a field.
NEEDS_COLUMN = ("exact_match", "contains", "json_field_match")
NEEDS_PATTERN = ("regex", "format")
BUILTINS = ("exact_match", "contains", "regex", "json_valid", "json_field_match", "length_penalty", "format")
PYTHON_PREFIX = "python:"


def text_of(completion: Any) -> str:
    """A completion's text: a string as is, a chat completion's last message content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _exact_match(spec: RewardSpec) -> Callable[..., list[float | None]]:
    column = spec.column or DEFAULT_COLUMN

    def score(prompts, completions, **columns):
        return [float(text_of(c).strip() == str(ref).strip()) for c, ref in zip(completions, columns[column])]
    return score


def _contains(spec: RewardSpec) -> Callable[..., list[float | None]]:
    column = spec.column or DEFAULT_COLUMN

    def score(prompts, completions, **columns):
        return [float(str(ref).strip() in text_of(c)) for c, ref in zip(completions, columns[column])]
    return score


def _regex(spec: RewardSpec) -> Callable[..., list[float | None]]:
    pattern = re.compile(spec.pattern or "")

    def score(prompts, completions, **columns):
        return [float(pattern.search(text_of(c)) is not None) for c in completions]
    return score


def _format(spec: RewardSpec) -> Callable[..., list[float | None]]:
    pattern = re.compile(spec.pattern or "")

    def score(prompts, completions, **columns):
        return [float(pattern.fullmatch(text_of(c).strip()) is not None) for c in completions]
    return score


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def _json_valid(spec: RewardSpec) -> Callable[..., list[float | None]]:
    def score(prompts, completions, **columns):
        return [float(_parse_json(text_of(c).strip())[0]) for c in completions]
    return score


def _json_field_match(spec: RewardSpec) -> Callable[..., list[float | None]]:
    column, name = spec.column or DEFAULT_COLUMN, spec.field

    def score(prompts, completions, **columns):
        found = []
        for completion, ref in zip(completions, columns[column]):
            ok, value = _parse_json(text_of(completion).strip())
            found.append(float(ok and isinstance(value, dict) and str(value.get(name)).strip() == str(ref).strip()))
        return found
    return score


def _length_penalty(spec: RewardSpec) -> Callable[..., list[float | None]]:
    target = spec.target_length or 1

    def score(prompts, completions, **columns):
        # 0 up to the target, then -1 per target-length of excess: a gentle push, never a cliff.
        return [-max(len(text_of(c)) - target, 0) / target for c in completions]
    return score


FACTORIES = {"exact_match": _exact_match, "contains": _contains, "regex": _regex, "format": _format,
             "json_valid": _json_valid, "json_field_match": _json_field_match, "length_penalty": _length_penalty}


@dataclass(frozen=True)
class Reward:
    label: str  # how metrics name it: rewards/<label>/mean
    weight: float
    function: Callable[..., list[float | None]]


def reward_label(spec: RewardSpec, index: int, specs: Sequence[RewardSpec]) -> str:
    """A metric-safe name, unique in the list (exact_match, exact_match_2, ...)."""
    base = spec.name.rsplit(":", 1)[-1] if spec.name.startswith(PYTHON_PREFIX) else spec.name
    same = [i for i, other in enumerate(specs) if other.name == spec.name]
    return base if len(same) == 1 else f"{base}_{same.index(index) + 1}"


def build_rewards(specs: Sequence[RewardSpec]) -> list[Reward]:
    """The callables TRL calls, each named by its label (TRL logs rewards/<__name__>/mean)."""
    rewards = []
    for index, spec in enumerate(specs):
        inner = _load_user_function(spec.name)[0] if spec.name.startswith(PYTHON_PREFIX) else FACTORIES[spec.name](spec)

        def call(prompts, completions, _inner=inner, **columns):
            return _inner(prompts, completions, **columns)
        call.__name__ = reward_label(spec, index, specs)
        rewards.append(Reward(call.__name__, spec.weight, call))
    return rewards


def reward_columns(specs: Sequence[RewardSpec]) -> dict[str, str]:
    """Data columns the rewards read → the reward key that names it (for data checks)."""
    found: dict[str, str] = {}
    for index, spec in enumerate(specs):
        if spec.name in NEEDS_COLUMN:
            found.setdefault(spec.column or DEFAULT_COLUMN, f"grpo.rewards[{index}]")
    return found


def check_rewards(specs: Sequence[RewardSpec]) -> list[Problem]:
    """Every problem of the reward list, found without running a reward."""
    if not specs:
        return [Problem("grpo.rewards", "no reward function: GRPO has nothing to learn from",
                        "add one, e.g. grpo.rewards=[{name: exact_match, column: answer}]")]
    problems = []
    for index, spec in enumerate(specs):
        problem = _spec_problem(spec, f"grpo.rewards[{index}]")
        if problem:
            problems.append(problem)
    return problems


def _spec_problem(spec: RewardSpec, where: str) -> Problem | None:
    if spec.name.startswith(PYTHON_PREFIX):
        return _load_user_function(spec.name, where)[1]
    if spec.name not in BUILTINS:
        return Problem(f"{where}.name", f"unknown reward {spec.name!r}",
                       f"use one of {', '.join(BUILTINS)}, or python:module:function for your own")
    if spec.name in NEEDS_PATTERN:
        if not spec.pattern:
            return Problem(f"{where}.pattern", f"reward {spec.name} needs a pattern", f"set {where}.pattern='<regex>'")
        try:
            re.compile(spec.pattern)
        except re.error as error:
            return Problem(f"{where}.pattern", f"{spec.pattern!r} is no regular expression: {error}", "fix the pattern")
    if spec.name == "json_field_match" and not spec.field:
        return Problem(f"{where}.field", "json_field_match needs the JSON field to compare", f"set {where}.field=<name>")
    if spec.name == "length_penalty" and spec.target_length is None:
        return Problem(f"{where}.target_length", "length_penalty needs a target length in characters",
                       f"set {where}.target_length=200")
    return None


def _load_user_function(name: str, where: str = "grpo.rewards") -> tuple[Callable | None, Problem | None]:
    """Import python:module:function and check it can be called as fn(prompts, completions, **columns)."""
    target = name[len(PYTHON_PREFIX):]
    module_name, _, function_name = target.rpartition(":")
    fix = "write python:package.module:function (the module importable from the working directory or PYTHONPATH)"
    if not module_name or not function_name:
        return None, Problem(f"{where}.name", f"{name!r} does not name a module and a function", fix)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure of user code is the user's to fix
        return None, Problem(f"{where}.name", f"cannot import {module_name!r}: {type(error).__name__}: {error}", fix)
    function = getattr(module, function_name, None)
    if not callable(function):
        return None, Problem(f"{where}.name", f"module {module_name!r} has no function {function_name!r}", fix)
    problem = _signature_problem(function)
    return (None, Problem(f"{where}.name", f"{name}: {problem}", "define it as def "
                          f"{function_name}(prompts, completions, **kwargs) -> list[float]")) if problem else (function, None)


def _signature_problem(function: Callable) -> str | None:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return "its signature cannot be read"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    has_var_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
    if names[:2] != ["prompts", "completions"]:
        return f"the first two parameters must be prompts and completions, found {names[:2] or 'none'}"
    required_extra = [p.name for p in positional[2:] if p.default is p.empty]
    if required_extra:
        return f"parameters {required_extra} have no default; data columns arrive as keyword arguments"
    if not has_var_keyword:
        return "it takes no **kwargs; TRL passes every data column (and trainer_state) as keyword arguments"
    return None
