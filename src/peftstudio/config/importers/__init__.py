"""`peftstudio import`: a config written for another tool → a peftstudio YAML, meaning kept or
the import refused.

Formats: Axolotl YAML, LLaMA-Factory YAML (with its dataset_info.json via `--dataset-info`),
TRL CLI / alignment-handbook YAML, torchtune recipe YAML, HF TrainingArguments / SFTConfig
JSON and the studio wizard's JSON. Every source key ends in one verdict of the import table
(table.py): mapped, approximated, ignored or refused. Any refusal stops the import (exit 2,
the keys named) unless `allow_changes`, which writes each change as a comment in the YAML.
The result is validated as `peftstudio validate` validates a file.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftstudio.config.compose import parse_yaml
from peftstudio.config.importers import axolotl, hf, llamafactory, torchtune, wizard
from peftstudio.config.importers.table import Dialect, Outcome, Verdict, describe_value, judge
from peftstudio.errors import Problem, UserError

__all__ = ["ImportResult", "ImportRefused", "describe_value", "detect_dialect", "import_file"]
FORMATS = ("Axolotl YAML", "LLaMA-Factory YAML", "TRL / alignment-handbook YAML", "torchtune recipe YAML",
           "HF TrainingArguments / SFTConfig JSON", "wizard JSON")


@dataclass
class ImportResult:
    kind: str
    source: Path
    outcomes: list[Outcome]
    values: dict[str, Any] = field(default_factory=dict)  # flat dotted peftstudio keys
    group_selections: dict[str, str] = field(default_factory=dict)  # e.g. {"peft": "qlora"}
    yaml_text: str = ""

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict.kind == kind]

    @property
    def refused(self) -> list[Outcome]:
        return self.of("refused")

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of(kind)) for kind in ("mapped", "approximated", "ignored", "refused")}

    def report(self) -> list[str]:
        """The import table, one row per source key (refused first)."""
        order = {"refused": 0, "approximated": 1, "mapped": 2, "ignored": 3}
        return [o.row() for o in sorted(self.outcomes, key=lambda o: order[o.verdict.kind])]


class ImportRefused(UserError):
    """The import would change what the run computes; `result` holds the whole table."""

    def __init__(self, result: ImportResult):
        problems = [Problem(f"{result.source.name}: {o.key}", f"{describe_value(o.key, o.value)}: {o.verdict.note}",
                            "change it in the source, or pass --allow-changes to import anyway (each change is "
                            "written as a comment in the YAML)") for o in result.refused]
        super().__init__(problems, headline=f"import refused: {len(problems)} key(s) would change what the run "
                                            f"computes ({result.kind})")
        self.result = result


def read_source(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        raise UserError(Problem(str(path), "file not found", "pass an existing JSON or YAML file"))
    try:
        text = path.read_text(encoding="utf-8")
        # YAML through the one safe reader that refuses alias bombs and deep nesting before building.
        data = json.loads(text) if path.suffix.lower() == ".json" else parse_yaml(text, str(path))[0]
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise UserError(Problem(str(path), f"cannot be read: {str(error).splitlines()[0]}",
                                "pass a valid JSON or YAML file")) from None
    if not isinstance(data, dict):
        raise UserError(Problem(str(path), f"top level is a {type(data).__name__}, not a mapping of keys",
                                "pass a JSON object or YAML mapping"))
    return data, text


def detect_dialect(path: Path, data: dict[str, Any], text: str, dataset_info: Path | None = None) -> Dialect:
    """Which format `data` is, from its keys and the file type; an unknown one is refused."""
    keys = set(data)
    is_json = path.suffix.lower() == ".json"
    if wizard.MARKERS & keys and not {"lora_r", "model_name_or_path"} & keys:
        return wizard.DIALECT
    if "model_name_or_path" in keys and llamafactory.MARKERS & keys:
        return llamafactory.dialect(dataset_info)
    if torchtune.MARKERS & keys and isinstance(data.get("model"), dict) and "_component_" in data["model"]:
        return torchtune.dialect(text)
    if "base_model" in keys or (axolotl.MARKERS & keys and not is_json and "model_name_or_path" not in keys):
        return axolotl.DIALECT
    if "model_name_or_path" in keys:
        return hf.TRL_DIALECT
    if hf.HF_MARKERS & keys:
        return hf.HF_DIALECT
    raise UserError(Problem(str(path), "not a recognised config: it has none of the keys of "
                            + ", ".join(FORMATS), "pass a config written for one of those formats"))


def import_file(path: Path, dataset_info: Path | None = None, allow_changes: bool = False) -> ImportResult:
    """Convert `path` into a validated peftstudio config. Raises ImportRefused when a key would
    change the run, unless `allow_changes`."""
    result = judge_file(Path(path), dataset_info)
    if result.refused and not allow_changes:
        raise ImportRefused(result)
    result.yaml_text = render_yaml(result)
    return result


def judge_file(path: Path, dataset_info: Path | None = None) -> ImportResult:
    """Every key's verdict, the peftstudio values, and values the schema rejects refused."""
    source, text = read_source(path)
    dialect = detect_dialect(path, source, text, dataset_info)
    result = ImportResult(dialect.name, path, judge(dialect, source))
    _collect(result)
    _refuse_invalid(result)
    return result


def _collect(result: ImportResult) -> None:
    result.values, result.group_selections = {}, {}
    for outcome in result.outcomes:
        if outcome.verdict.kind == "refused":
            continue
        for dotted, value in outcome.verdict.pairs:
            if dotted.startswith("defaults."):
                result.group_selections[dotted.removeprefix("defaults.")] = value
            else:
                result.values[dotted] = value


def _refuse_invalid(result: ImportResult, rounds: int = 5) -> None:
    """A value the schema rejects refuses the key it came from (never silently dropped)."""
    for _ in range(rounds):
        problems = validate_text(render_yaml(result, with_comments=False), result.source)
        if not problems:
            return
        for problem in problems:
            owners = [o for o in result.outcomes if o.verdict.kind != "refused"
                      and any(problem.where in (k, k.removeprefix("defaults.")) or problem.where.startswith(k + ".")
                              for k, _ in o.verdict.pairs)]
            if not owners:
                raise UserError(problems, headline="the imported config does not validate")
            for owner in owners:
                owner.verdict = Verdict("refused", note=f"rejected by the schema: {problem.message}")
        _collect(result)
    remaining = validate_text(render_yaml(result, with_comments=False), result.source)
    if remaining:
        raise UserError(remaining, headline="the imported config does not validate")


def validate_text(text: str, source: Path) -> list[Problem]:
    """Problems `peftstudio validate` reports for a config with this text, naming `source`
    instead of the temporary file they were found in (which is gone when they are shown)."""
    from peftstudio.config.validate import load_config

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "imported.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config([], path)
        except UserError as error:
            temporary = re.compile(re.escape(str(path)) + r"(:\d+)?")
            label = f"the import of {source.name}"
            return [Problem(temporary.sub(label, p.where), temporary.sub(label, p.message), temporary.sub(label, p.fix))
                    for p in error.problems]
    return []


def render_yaml(result: ImportResult, with_comments: bool = True) -> str:
    """The peftstudio YAML: a defaults list for group selections, nested sections, then the
    changes and approximations as comments."""
    nested: dict[str, Any] = {}
    if result.group_selections:
        nested["defaults"] = [{group: option} for group, option in result.group_selections.items()]
    for dotted, value in result.values.items():
        target = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if not with_comments:
        return body
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts().items())
    header = f"# Imported by `peftstudio import` from {result.source.name} ({result.kind}): {counts}.\n"
    return header + body + _comments(result)


def _comments(result: ImportResult) -> str:
    lines = []
    if result.refused:
        lines.append(f"# CHANGED by --allow-changes ({len(result.refused)} key(s)): this run differs from the source here.")
        lines += [f"#   {o.key} = {describe_value(o.key, o.value)}: {o.verdict.note}" for o in result.refused]
    approximated = result.of("approximated")
    if approximated:
        lines.append(f"# Approximated ({len(approximated)} key(s)):")
        lines += [f"#   {o.key}: {o.verdict.note}" for o in approximated]
    ignored = result.of("ignored")
    if ignored:
        lines.append(f"# Ignored, they do not change what the run computes ({len(ignored)} key(s)): "
                     + ", ".join(o.key for o in ignored))
    return "\n".join(lines) + "\n" if lines else ""
