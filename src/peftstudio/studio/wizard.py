"""The wizard's state, turned into exactly what the CLI takes.

The browser keeps the state in the page URL: group choices (`model=tiny`) and dotted values
(`training.micro_batch_size=8`) written in the CLI's override grammar. Here it becomes the
override list `peftstudio train` would get, and the YAML file a job runs with
`peftstudio train --config`. Both compose to the same config; the review step shows both.

The studio owns a few keys (where outputs and checkpoints go, which data file is read) and
refuses values that could reach outside what the user chose: `${...}` interpolations (they
could read the server's environment), model paths that are neither a hub id nor a local
directory, data paths that are not an uploaded dataset.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from peftstudio.config.compose import ALL_GROUPS, group_options, parse_yaml
from peftstudio.config.introspect import find_field, flatten
from peftstudio.config.model_source import missing_model_files
from peftstudio.config.overrides import override_value, quoted
from peftstudio.config.schema import EMBEDDED_MODEL_ID
from peftstudio.errors import Problem, UserError

# Keys the studio sets itself for every job; the user cannot point them elsewhere.
STUDIO_OWNED = ("training.output_dir", "training.checkpoint_dir", "training.resume", "data.path",
                "data.validation_path")
KEY_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
Scalar = str | int | float | bool | None


class WizardState(BaseModel):
    """What the wizard has chosen so far."""

    groups: dict[str, str] = Field(default_factory=dict, description="group → option, e.g. model → tiny")
    values: dict[str, Scalar | list[str]] = Field(
        default_factory=dict, description="dotted key → value in the CLI override grammar, e.g. training.micro_batch_size → 8")
    dataset: str | None = Field(default=None, description="id of an uploaded dataset; none means the bundled sample")
    yaml_text: str | None = Field(default=None, description="a whole config as YAML, used instead of groups/values")


@dataclass
class Translation:
    """The state as CLI overrides, or the problems that stop it."""

    overrides: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def translate(state: WizardState, dataset_path: Path | None) -> Translation:
    """Overrides for `state`; `dataset_path` is the stored file of `state.dataset` (or None)."""
    if state.yaml_text is not None:
        state, problems = state_from_yaml(state.yaml_text, state.dataset)
        if problems:
            return Translation(problems=problems)
    result = Translation()
    for group, option in state.groups.items():
        _add_group(result, group, option)
    for key, value in state.values.items():
        _add_value(result, key, value)
    if dataset_path is not None:
        result.overrides.append(f"data.path={quoted(str(dataset_path))}")
    return result


def _add_group(result: Translation, group: str, option: str) -> None:
    if group not in ALL_GROUPS or option not in group_options(group):
        choices = ", ".join(group_options(group)) if group in ALL_GROUPS else ", ".join(ALL_GROUPS)
        result.problems.append(Problem(group, f"unknown choice {option!r}", f"pick one of: {choices}"))
        return
    result.overrides.append(f"{'+' if group == 'experiment' else ''}{group}={option}")


def _add_value(result: Translation, key: str, value: Any) -> None:
    doc = find_field(key) if KEY_PATTERN.match(key) else None
    if doc is None or doc.is_section:
        result.problems.append(Problem(key, "not a config key", "see `peftstudio explain training` for the keys"))
        return
    if key in STUDIO_OWNED:
        result.problems.append(Problem(key, "is set by the studio for every job",
                                       "upload data in step 5; outputs and checkpoints go to the job's directory"))
        return
    text = format_value(value, doc.type_text)
    problem = _unsafe_value(key, text)
    if problem:
        result.problems.append(problem)
        return
    if key == "model.trust_remote_code" and text == "true":
        result.warnings.append("model.trust_remote_code is on: the model repository's Python code will run on "
                               "this machine with your permissions")
    result.overrides.append(f"{key}={text}")


def format_value(value: Any, type_text: str) -> str:
    """A value in the override grammar; free text for string keys is quoted, as a shell user would."""
    if value is None or isinstance(value, (bool, int, float)):
        return override_value(value)
    if isinstance(value, list):
        return "[" + ",".join(quoted(str(item)) for item in value) + "]"
    text = str(value).strip()
    if text in ("", "null"):
        return "null"
    items = _model_list(text) if "list[" in type_text else None
    if items is not None:
        return override_value(items)
    if "list[" in type_text and not text.startswith("[") and "," in text:
        return "[" + ",".join(quoted(part.strip()) for part in text.split(",") if part.strip()) + "]"
    is_text_field = "str" in type_text and "list[" not in type_text and "dict[" not in type_text
    return quoted(text) if is_text_field else text


def _model_list(text: str) -> list[dict[str, Any]] | None:
    """A list of mappings (grpo.rewards, eval.metrics) written as JSON (the wizard's reward editor)
    or YAML flow (a pasted config), or None when `text` is not one. Read with YAML, a superset of
    JSON, so both round-trip exactly; the keys must be plain names (the schema checks which)."""
    if not text.startswith("[{"):
        return None
    try:
        items = parse_yaml(text, "value")[0]  # the safe loader, refusing what would explode when built
    except UserError:
        return None  # left to the override grammar, which names what it cannot read
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    if not all(isinstance(key, str) and KEY_PATTERN.match(key) and "." not in key for item in items for key in item):
        return None
    return items


def _unsafe_value(key: str, text: str) -> Problem | None:
    if "${" in text:
        return Problem(key, "interpolations (${...}) are not accepted in the studio", "type the value itself")
    if any(ch in text for ch in "\n\r\0"):
        return Problem(key, "line breaks and NUL characters are not allowed in a value", "type one line")
    if key == "model.name_or_path":
        return check_model_path(text.strip("'").replace("\\'", "'"))
    if key == "data.chat_template" and (text.strip("'").endswith(".jinja") or Path(text.strip("'")).is_file()):
        return Problem(key, "template files are not read in the studio", "pick a template name or paste the Jinja text")
    return _grammar_problem(key, text)


def _grammar_problem(key: str, text: str) -> Problem | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        override, = OverridesParser.create().parse_overrides([f"{key}={text}"])
    except OverrideParseException as error:
        return Problem(key, f"cannot read {text!r}: {error.message.splitlines()[0]}", "type one plain value")
    if override.is_sweep_override():
        return Problem(key, f"{text!r} is a list of choices (a sweep)", "type one value, or [a,b] for a list")
    return None


def check_model_path(value: str) -> Problem | None:
    """Model sources are limited to the embedded model, hub ids and existing local directories."""
    if value == EMBEDDED_MODEL_ID or (HUB_ID.match(value) and ".." not in value):
        return None
    path = Path(value)
    if path.is_absolute() and path.is_dir() and not missing_model_files(path):
        return None
    # One answer for a missing path, a file, and a directory that is not a model: the studio
    # says no more about the server's files than the CLI user on it would read.
    return Problem("model.name_or_path", f"no config.json / tokenizer files in {value!r}: not a hub id (org/name) "
                   "nor a model directory on this machine",
                   f"type a hub id such as Qwen/Qwen2.5-0.5B, the absolute path of a model directory, or "
                   f"{EMBEDDED_MODEL_ID}")


def state_from_yaml(text: str, dataset: str | None) -> tuple[WizardState, list[Problem]]:
    """A pasted YAML config as wizard state, loaded with the safe loader only."""
    try:
        data = parse_yaml(text, "yaml")[0] or {}
    except UserError as error:  # bad syntax, or a file that would explode when built: as the CLI says it
        return WizardState(), error.problems
    if not isinstance(data, dict):
        return WizardState(), [Problem("yaml", "the top level must be a mapping of keys", "write `section: {key: value}`")]
    data = dict(data)
    groups: dict[str, str] = {}
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, dict) and len(entry) == 1:
            (group, option), = entry.items()
            groups[str(group).removeprefix("override").strip().lstrip("/")] = str(option)
    values = {key: value for key, value in flatten(data).items() if key not in STUDIO_OWNED}
    return WizardState(groups=groups, values=_plain(values), dataset=dataset), []


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    plain = {}
    for key, value in values.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            plain[key] = json.dumps(value)  # as the wizard's reward editor writes it (JSON, one line)
        elif isinstance(value, (dict, tuple)) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
            plain[key] = yaml.safe_dump(value, default_flow_style=True).strip()
        else:
            plain[key] = value
    return plain


def config_yaml(overrides: list[str], job_dir: Path | None = None) -> str:
    """The YAML file a job runs with `peftstudio train --config`: the same choices as the
    overrides, plus the job's own output and checkpoint directories."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    document: dict[str, Any] = {"defaults": []}
    for override in OverridesParser.create().parse_overrides(overrides):
        key, value = override.key_or_group, override.value()
        if key in ALL_GROUPS and "." not in key and not isinstance(value, dict):
            document["defaults"].append({key: value})
        else:
            _set(document, key, value)
    if job_dir is not None:
        _set(document, "training.output_dir", str(job_dir / "outputs"))
        _set(document, "training.checkpoint_dir", str(job_dir / "checkpoints"))
    if not document["defaults"]:
        del document["defaults"]
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _set(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        document = document.setdefault(part, {})
    document[leaf] = value


PLAIN_TEXT = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:@+-]*$")
NOT_TEXT = re.compile(r"^(true|false|null|[-+]?[0-9.]+(e[-+]?[0-9]+)?)$", re.IGNORECASE)


def cli_command(overrides: list[str]) -> str:
    """The `peftstudio train …` line a terminal user would type for the same run (quotes only
    where the shell or the override grammar needs them)."""
    return "peftstudio train " + " ".join(_shell_word(item) for item in overrides)


def _shell_word(override: str) -> str:
    key, _, value = override.partition("=")
    inner = value[1:-1] if len(value) > 1 and value[0] == value[-1] == "'" else None
    if inner is not None and PLAIN_TEXT.match(inner) and not NOT_TEXT.match(inner):
        return f"{key}={inner}"
    return shlex.quote(override)
