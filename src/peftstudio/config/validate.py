"""Turn a composition into a typed `RunConfig`, or one error listing every problem.

Each problem names the dotted key, the bad value, where the value came from (file:line or
the override), what is allowed, and for unknown keys the closest valid one.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peftstudio.config.compose import CONF_DIR, RANK_USER_FILE, Composition, compose, read_yaml
from peftstudio.config.introspect import find_field, keys_under
from peftstudio.config.schema import RunConfig
from peftstudio.errors import Problem, UserError

MISSING = "???"


def load_config(overrides: list[str] | None = None, config_file: Path | None = None) -> tuple[RunConfig, Composition]:
    """Compose and validate: the typed config and the composition it came from."""
    composition = compose(overrides, config_file)
    return validate_composition(composition), composition


def validate_composition(composition: Composition) -> RunConfig:
    problems = list(composition.problems) + _missing_values(composition.values, composition)
    try:
        config = RunConfig.model_validate(composition.values)
    except ValidationError as error:
        problems += [_describe(item, composition) for item in error.errors()]
        config = None
    if config is not None:
        problems += _preset_for_another_model(config, composition)
    if problems:
        raise UserError(_dedupe(problems), headline=_headline(problems))
    return config


def _preset_for_another_model(config: RunConfig, composition: Composition) -> list[Problem]:
    """A model preset carries one model's architecture numbers. Naming another model on top of
    it would plan that model with the preset's numbers, unsaid: refused, unless the user states
    the architecture too, or the named model is known (local, cached, catalogue) to have
    exactly the preset's numbers (an instruct twin)."""
    presets = composition.groups.get("model") or []
    named = composition.origin("model.name_or_path")
    if not presets or named.rank < RANK_USER_FILE or config.model.architecture is None:
        return []
    preset_name = _preset_model_name(presets[-1])
    user_numbers = any(key.startswith("model.architecture") and origin.rank >= RANK_USER_FILE
                       for key, origin in composition.origins.items())
    if config.model.name_or_path == preset_name or user_numbers or _same_numbers(config):
        return []
    return [Problem("model.name_or_path", f"{config.model.name_or_path!r} (from {named}) is another model than "
                    f"model={presets[-1]} ({preset_name}), whose architecture numbers it would be planned with",
                    f"drop model={presets[-1]} (peftstudio then reads {config.model.name_or_path}'s own numbers from its "
                    "config.json, the Hugging Face cache or its catalogue), or state them with model.architecture.*")]


def _preset_model_name(preset: str) -> str | None:
    data, _ = read_yaml(CONF_DIR / "model" / f"{preset}.yaml")
    data = data or {}
    return (data.get("model") or {}).get("name_or_path") if "model" in data else data.get("name_or_path")


def _same_numbers(config: RunConfig) -> bool:
    from peftstudio.config.known_models import find_architecture

    try:
        found = find_architecture(config.model)
    except UserError:
        return False
    return found.architecture == config.model.architecture


def _headline(problems: list[Problem]) -> str:
    count = len(problems)
    return f"invalid config: {count} problem{'s' if count > 1 else ''}"


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, unique = set(), []
    for problem in problems:
        if problem.render() not in seen:
            seen.add(problem.render())
            unique.append(problem)
    return unique


def _missing_values(values: dict[str, Any], composition: Composition, prefix: str = "") -> list[Problem]:
    problems = []
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            problems += _missing_values(value, composition, dotted)
        elif value == MISSING:
            problems.append(Problem(dotted, f"required but not set (from {composition.origin(dotted)})",
                                    f"add {dotted}=VALUE to the command line or your --config file"))
    return problems


def _describe(item: dict[str, Any], composition: Composition) -> Problem:
    key = ".".join(str(part) for part in item["loc"])
    if item["type"] == "extra_forbidden":
        return _unknown_key(key, composition)
    field = find_field(key)
    value = item.get("input")
    allowed = (field.range_text if field else "") or _pydantic_expectation(item)
    message = f"{value!r} is invalid (from {composition.origin(key)}): {item['msg'].removeprefix('Value error, ')}"
    fix = f"set {key} to {allowed}" if allowed else f"see `peftstudio explain {key}`"
    return Problem(key, message, fix)


def _pydantic_expectation(item: dict[str, Any]) -> str:
    expected = (item.get("ctx") or {}).get("expected")
    return f"one of {expected}" if expected else ""


def _unknown_key(key: str, composition: Composition) -> Problem:
    parent, _, name = key.rpartition(".")
    valid = [k.rpartition(".")[2] for k in keys_under(parent)] if (not parent or find_field(parent)) else []
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    suggestion = f"{parent}.{close[0]}" if parent and close else (close[0] if close else "")
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    fix = f"use {suggestion}" if suggestion else f"see `peftstudio explain {parent or 'training'}` for valid keys"
    return Problem(key, f"unknown key (from {_origin_under(key, composition)}){hint}", fix)


def _origin_under(key: str, composition: Composition) -> str:
    """Origin of a key, or of the first leaf under it when the key is a whole mapping."""
    if key in composition.origins:
        return str(composition.origins[key])
    under = [str(origin) for k, origin in composition.origins.items() if k.startswith(key + ".")]
    return under[0] if under else "default"
