"""Compose a run config from YAML groups, a user file and command-line overrides.

The grammar is Hydra's (parsed by Hydra's own override parser): `a.b=v`, `group=option`,
`+experiment=name`, `~a.b`, `group=[x,y]`, and group files may start with
`# @package _global_`. Layers merge in a fixed order, later wins:

    schema default < group files (primary defaults list order) < experiment
    < user file (--config) < command-line overrides

Every leaf remembers which layer set it (its provenance), down to file:line, so `plan` can
say where each value came from and resolution can tell an explicit value from a default.
Nothing here imports torch: config errors surface in a fraction of a second.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftstudio.config.introspect import ABSENT, find_field, is_section_key, lookup
from peftstudio.config.overrides import quoted
from peftstudio.config.schema import RunConfig, canonical_key
from peftstudio.errors import Problem, UserError
from peftstudio.redact import remember_secret, scrub, uri_credentials

CONF_DIR = Path(__file__).parent / "conf"
# Bounds on a config file, checked before it is built: real configs are a few KiB, a few levels
# deep and a few hundred values even with anchors; hostile ones are refused in milliseconds.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 100_000
# Merge order of the groups; later groups override earlier ones on shared keys.
GROUP_ORDER = ("training", "optim", "peft", "data", "logging", "model", "platform", "objective")
OPTIONAL_GROUPS = ("experiment",)
ALL_GROUPS = GROUP_ORDER + OPTIONAL_GROUPS

# How explicit an origin is; resolution compares these (e.g. num_epochs vs num_batches).
RANK_DEFAULT, RANK_GROUP, RANK_EXPERIMENT, RANK_USER_FILE, RANK_OVERRIDE, RANK_AUTO = range(6)


@dataclass(frozen=True)
class Origin:
    """Where a value came from."""

    rank: int
    text: str

    def __str__(self) -> str:
        return self.text


DEFAULT_ORIGIN = Origin(RANK_DEFAULT, "default")


@dataclass
class Composition:
    """The merged, not yet validated config, with the origin of every leaf."""

    values: dict[str, Any]
    origins: dict[str, Origin]
    groups: dict[str, list[str]] = field(default_factory=dict)
    # Problems found while composing (bad group option, bad deletion); validation reports
    # them together with the schema's, so the user sees everything at once.
    problems: list[Problem] = field(default_factory=list)

    def origin(self, key: str) -> Origin:
        return self.origins.get(key, DEFAULT_ORIGIN)


@dataclass
class _Layer:
    values: dict[str, Any]
    rank: int
    name: str
    file: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # schema key → the alias this layer wrote

    def origin_of(self, key: str) -> Origin:
        alias = self.aliases.get(key)
        said = f"; {alias} is {key}" if alias else ""
        if self.file is None:
            return Origin(self.rank, f"{self.name}{f' ({alias} is {key})' if alias else ''}")
        line = self.lines.get(alias or key)
        return Origin(self.rank, f"{self.name} ({self.file}:{line}{said})" if line else f"{self.name} ({self.file}{said})")

    def __post_init__(self) -> None:
        self.values = _unalias(self.values, self.aliases)


def group_options(group: str) -> list[str]:
    """The options a group offers (its YAML files)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """Parse a YAML (or JSON) file safely; return the data and a dotted key → line map."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise UserError(Problem(str(path), f"{size} bytes: larger than a config file can be "
                                    f"({MAX_YAML_BYTES} bytes at most)", "pass the run's config file, not a data file"))
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(Problem(str(path), f"not UTF-8 text ({error.reason})", "save the file as UTF-8")) from None
    except OSError as error:
        raise UserError(Problem(str(path), f"cannot read: {error.strerror}", "check the path")) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML (or JSON) text from `source` with the safe loader, after refusing what would
    explode when built (see `_check_shape`); the data and a dotted key → line map. Every
    problem is a UserError naming `source`:line. The CLI's files and the studio's pasted YAML
    both come through here."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (a ReaderError) as it starts
        _check_shape(text, source)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise UserError(Problem(where, f"invalid YAML/JSON: {problem}", "fix the syntax at that line")) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _node_lines(node)


def _check_shape(text: str, source: str) -> None:
    """Refuse YAML whose built form would be huge or too deep, from the event stream alone (the
    parser is iterative; building nodes recurses, and expanding aliases multiplies): a "billion
    laughs" file of a few lines expands to 10^9 values, and 5000 nested brackets overflow the
    stack. Counts every value as built, each alias as the size of what it names."""
    if len(text) > MAX_YAML_BYTES:
        raise UserError(Problem(source, f"{len(text)} characters: larger than a config can be "
                                f"({MAX_YAML_BYTES} at most)", "pass the run's config, not a data file"))
    built, open_collections, anchored = 0, [], {}
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_collections.append((event.anchor, built))
            if len(open_collections) > MAX_YAML_DEPTH:
                raise UserError(Problem(f"{source}:{event.start_mark.line + 1}", f"nested more than {MAX_YAML_DEPTH} "
                                        "levels deep", "a config nests a few levels: flatten the structure"))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_collections.pop()
            if anchor is not None:
                anchored[anchor] = built - start + 1
        built += 1 if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)) else 0
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            anchored[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            built += anchored.get(event.anchor, 1)
        if built > MAX_YAML_VALUES:
            raise UserError(Problem(f"{source}:{event.start_mark.line + 1}", f"expands to more than {MAX_YAML_VALUES} "
                                    "values (aliases repeating aliases, as in a 'billion laughs' file)",
                                    "write the values out instead of nesting anchors and aliases"))


def _node_lines(node: Any, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            lines.update(_node_lines(value_node, key))
    return lines


def is_global_package(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    return first.strip().replace(" ", "") == "#@package_global_"


def _load_group_file(group: str, option: str, rank: int) -> tuple[_Layer, dict[str, str]]:
    """One group option as a layer, plus the group selections its `defaults` list makes."""
    path = CONF_DIR / group / f"{option}.yaml"
    data, lines = read_yaml(path)
    data = dict(data or {})
    selections = _parse_defaults(data.pop("defaults", []), f"{group}/{option}.yaml")
    if not is_global_package(path):
        data = {group: data}
        lines = {f"{group}.{key}": line for key, line in lines.items()}
    return _Layer(data, rank, f"{group}={option}", f"{group}/{option}.yaml", lines), selections


def _parse_defaults(entries: Any, source: str) -> dict[str, str]:
    """Group selections from a Hydra defaults list (`- group: option`, `- override /group: option`)."""
    selections: dict[str, str] = {}
    for entry in entries or []:
        if entry == "_self_":
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(Problem(source, f"defaults entry {entry!r} is not `group: option`", "write `- group: option`"))
        (key, option), = entry.items()
        group = str(key).removeprefix("override").strip().lstrip("/")
        selections[group] = option
    return selections


def _parse_overrides(overrides: list[str], problems: list[Problem]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
            continue
        except OverrideParseException as error:
            message = error.message.splitlines()[0].split(". ")[0].replace("LexerNoViableAltException", "cannot read")
        repaired = _quoted_value(text)
        try:
            parsed += parser.parse_overrides([repaired]) if repaired else []
            if repaired:
                continue
        except OverrideParseException:
            pass
        key = text.partition("=")[0] or "key"
        example = f"{key}={quoted(text.partition('=')[2])}" if "=" in text else "key.sub=value"
        problems.append(Problem(f"override {text!r}", f"cannot be read ({message})",
                                f"quote the value, e.g. \"{example}\" (the outer quotes are for the shell)"))
    return parsed


def _quoted_value(text: str) -> str | None:
    """`key=value` with the value quoted, for values the grammar would read otherwise (`~/x`,
    `a=b`, spaces): a plain key and an unquoted value are meant literally."""
    key, sign, value = text.partition("=")
    plain_key = key.lstrip("+").replace(".", "").replace("_", "").replace("-", "").isalnum()
    if not sign or not plain_key or not value or value[0] in "'\"[{":
        return None
    return f"{key}={quoted(value)}"


def _unalias(values: dict[str, Any], found: dict[str, str]) -> dict[str, Any]:
    """`values` with alias keys (schema.ALIASES) moved to the schema's keys; `found` records
    schema key → alias, which the origin text names."""
    moves: list[tuple[str, Any, str]] = []
    kept = _without_aliases(values, "", moves)
    for target, value, alias in moves:
        found[target] = alias
        *parents, leaf = target.split(".")
        node = kept
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return kept


def _without_aliases(values: dict[str, Any], prefix: str, moves: list[tuple[str, Any, str]]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        target = canonical_key(dotted)
        if target is not None:
            moves.append((target, value, dotted))
        elif isinstance(value, dict) and value and (is_section_key(dotted) or find_field(dotted) is None):
            inner = _without_aliases(value, dotted, moves)
            if inner:
                kept[key] = inner
        else:
            kept[key] = value
    return kept


def _check_option(group: str, option: Any, where: str, problems: list[Problem]) -> list[str]:
    options = option if isinstance(option, list) else [option]
    valid = group_options(group)
    kept = []
    for name in options:
        if str(name) in valid:
            kept.append(str(name))
            continue
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(Problem(where, f"unknown {group} option {name!r}{hint}; options: {', '.join(valid)}",
                                f"use {group}=<one of the options>, or add {group}/{name}.yaml"))
    return kept


def compose(overrides: list[str] | None = None, config_file: Path | None = None) -> Composition:
    """Merge defaults, groups, experiment, user file and overrides; record every leaf's origin."""
    problems: list[Problem] = []
    primary, _ = read_yaml(CONF_DIR / "config.yaml")
    primary = dict(primary)
    selections = {g: [o] for g, o in _parse_defaults(primary.pop("defaults", []), "config.yaml").items()}

    user_layer, user_selections = None, {}
    if config_file is not None:
        user_layer, user_selections = _load_user_file(Path(config_file))

    value_overrides, deletions, cli_selections = [], [], {}
    for override in _parse_overrides(list(overrides or []), problems):
        key = override.key_or_group
        if override.is_delete():
            key = canonical_key(key) or key  # ~training.seed deletes what training.seed=N set
            (selections.pop(key, None) if key in ALL_GROUPS else deletions.append((key, override.input_line)))
        elif key in ALL_GROUPS and not isinstance(override.value(), dict):
            cli_selections[key] = _check_option(key, override.value(), f"override {override.input_line!r}", problems)
        else:
            value_overrides.append((key, override.value(), override.input_line))

    experiment = (cli_selections.get("experiment") or user_selections.get("experiment") or [None])[0]
    experiment_layer, experiment_selections = None, {}
    if experiment is not None:
        experiment_layer, experiment_selections = _load_group_file("experiment", experiment, RANK_EXPERIMENT)
        for group, option in experiment_selections.items():
            selections[group] = _check_option(group, option, f"experiment/{experiment}.yaml", problems)
    for group, option in user_selections.items():
        if group != "experiment":
            selections[group] = _check_option(group, option, str(config_file), problems)
    selections.update({g: o for g, o in cli_selections.items() if g != "experiment"})
    model_chosen = any("model" in chosen for chosen in (cli_selections, user_selections, experiment_selections))
    if not model_chosen and _names_a_model(value_overrides, user_layer, experiment_layer):
        # The default preset describes the embedded model (its architecture numbers, and a
        # run length and learning rate sized for it); none of that fits a model the user names.
        selections.pop("model", None)

    layers = [_Layer(primary, RANK_GROUP, "primary config", "config.yaml")] + _group_layers(selections)
    if experiment_layer is not None:
        layers.append(experiment_layer)
        layers.append(_Layer({"experiment": experiment}, RANK_EXPERIMENT, f"+experiment={experiment}"))
    if user_layer is not None:
        layers.append(user_layer)
    for key, value, line in value_overrides:
        layers.append(_Layer(_nest(key, value), RANK_OVERRIDE, f"override {line}"))

    groups = {**selections, **({"experiment": [experiment]} if experiment else {})}
    composition = Composition({}, {}, groups, problems)
    # Schema defaults form the bottom layer, so every key exists for ${...} references.
    _merge(composition, RunConfig().model_dump(mode="json"), _Layer({}, RANK_DEFAULT, "default"))
    for layer in layers:
        _merge(composition, layer.values, layer)
    for key, line in deletions:
        _delete(composition, key, line, problems)
    composition.values = _resolve_interpolations(composition.values)
    return composition


def _names_a_model(value_overrides: list[tuple], *layers: _Layer | None) -> bool:
    """Whether an override, the user file or the experiment sets model.name_or_path."""
    for key, value, _ in value_overrides:
        if key == "model.name_or_path" or (key == "model" and isinstance(value, dict) and "name_or_path" in value):
            return True
    return any(layer is not None and isinstance(layer.values.get("model"), dict)
               and "name_or_path" in layer.values["model"] for layer in layers)


def _group_layers(selections: dict[str, list[str]]) -> list[_Layer]:
    layers = []
    for group in GROUP_ORDER:
        for option in selections.get(group, []):
            layer, _ = _load_group_file(group, option, RANK_GROUP)
            layers.append(layer)
    if "platform" in selections:
        platform = ",".join(selections["platform"])
        layers.append(_Layer({"platform": platform}, RANK_GROUP, f"platform={platform}"))
    return layers


def _load_user_file(path: Path) -> tuple[_Layer, dict[str, Any]]:
    if not path.is_file():
        raise UserError(Problem(str(path), "config file not found", "pass an existing YAML or JSON file to --config"))
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(Problem(str(path), f"top level must be a mapping of keys, got {type(data).__name__}",
                                "write `section: {key: value}` pairs"))
    data = dict(data)
    selections = _parse_defaults(data.pop("defaults", []), str(path))
    return _Layer(data, RANK_USER_FILE, "user file", str(path), lines), selections


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _merge(composition: Composition, values: dict[str, Any], layer: _Layer, prefix: str = "") -> None:
    target = composition.values
    for part in [p for p in prefix.split(".") if p]:
        target = target.setdefault(part, {})
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        descend = isinstance(value, dict) and (is_section_key(dotted) or find_field(dotted) is None)
        if descend and value:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(composition, value, layer, dotted)
            continue
        if layer.rank == RANK_OVERRIDE and isinstance(value, dict) and isinstance(target.get(key), dict):
            # Dotted overrides into one mapping merge (data.columns.prompt=q data.columns.completion=a).
            value = {**target[key], **value}
        target[key] = value
        for stale in [k for k in composition.origins if k.startswith(dotted + ".")]:
            del composition.origins[stale]
        composition.origins[dotted] = layer.origin_of(dotted)


def _delete(composition: Composition, key: str, line: str, problems: list[Problem]) -> None:
    """`~key`: drop what the layers set, so the schema default applies again."""
    set_by_layers = [k for k, origin in composition.origins.items()
                     if (k == key or k.startswith(key + ".")) and origin.rank > RANK_DEFAULT]
    if not set_by_layers:
        problems.append(Problem(f"override {line!r}", f"cannot delete {key}: it is not set by any layer",
                                "check the key with `peftstudio plan`"))
        return
    parts = key.split(".")
    target = composition.values
    for part in parts[:-1]:
        target = target[part]
    del target[parts[-1]]
    for stale in [k for k in composition.origins if k == key or k.startswith(key + ".")]:
        del composition.origins[stale]
    default = lookup(RunConfig().model_dump(mode="json"), key)
    if default is not ABSENT:
        _merge(composition, _nest(key, default), _Layer({}, RANK_DEFAULT, "default"))


_ENV_REFERENCE = re.compile(r"\$\{oc\.env:\s*([^,}\s]+)")


def _resolve_interpolations(values: dict[str, Any]) -> dict[str, Any]:
    """Resolve OmegaConf `${a.b}` references across the merged tree. Values taken from the
    environment (`${oc.env:NAME}`) and passwords inside URIs are remembered as secrets first
    (redact.py), so that no file, log or message shows them: saved files keep `${oc.env:NAME}`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _remember_secrets(values)
    try:
        return OmegaConf.to_container(OmegaConf.create(values), resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "config"
        raise UserError(Problem(str(key), f"cannot resolve interpolation: {scrub(str(error.msg))}",
                                "point ${...} at an existing key, or set the environment variable it names")) from None


def resolve_environment(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config (plan.json) with its `${oc.env:NAME}` values resolved again, in memory.
    A config without them is returned as it is (its other `${` text was resolved, or escaped,
    when it was composed)."""
    import json

    return _resolve_interpolations(values) if "${oc.env:" in json.dumps(values) else values


def _remember_secrets(value: Any) -> None:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(value, dict):
        for item in value.values():
            _remember_secrets(item)
    elif isinstance(value, list):
        for item in value:
            _remember_secrets(item)
    elif isinstance(value, str):
        for password in uri_credentials(value):
            remember_secret(password, "***")
        for name in _ENV_REFERENCE.findall(value):
            try:
                resolved = OmegaConf.create({"value": f"${{oc.env:{name}}}"}).value
            except OmegaConfBaseException:
                continue  # unset: resolution reports it
            remember_secret(str(resolved), f"${{oc.env:{name}}}")
            for password in uri_credentials(str(resolved)):
                remember_secret(password, "***")
