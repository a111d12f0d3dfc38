"""The import table: what becomes of every key of a foreign config.

Each source key ends in exactly one verdict:

- mapped: to the peftstudio keys named;
- approximated: mapped, or kept close, with a documented difference that the note says;
- ignored: it does not change what the run computes (logging niceties, hub uploads, `do_train`);
- refused: the run would differ (a full fine-tune, an objective or method peftstudio does not
  have yet, a GPTQ base, a dataset type it cannot read). A refusal stops the import (exit 2)
  unless `--allow-changes`, which writes each change as a comment in the YAML.

A rule is a function `(value, source) -> Verdict`, built with the small helpers below. A tool
(Dialect) is a table of rules, the defaults it applies to keys the file omits, and a
whole-file rule for what no single key says (a missing `adapter:` is a full fine-tune).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from peftstudio.redact import REDACTED, is_secret_name

Pairs = list[tuple[str, Any]]  # (dotted peftstudio key, value); `defaults.GROUP` selects a group option
Kind = Literal["mapped", "approximated", "ignored", "refused"]


@dataclass
class Verdict:
    kind: Kind
    pairs: Pairs = field(default_factory=list)
    note: str = ""


Rule = Callable[[Any, dict[str, Any]], Verdict]


class Refused(Exception):
    """Raised inside a rule: the value cannot be carried over without changing the run."""


@dataclass
class Outcome:
    """One row of the import report."""

    key: str
    value: Any
    verdict: Verdict
    from_default: bool = False  # the key was omitted: the source tool's own default was applied

    def row(self) -> str:
        shown = f"{self.key} = {describe_value(self.key, self.value)}"
        if self.from_default:
            shown = f"{self.key} (omitted; the tool's default {describe_value(self.key, self.value)})"
        targets = ", ".join(f"{k.removeprefix('defaults.')}={describe_value(k, v)}" if k.startswith("defaults.")
                            else k for k, v in self.verdict.pairs)
        parts = [f"{self.verdict.kind:<12} {shown}"]
        if targets:
            parts.append(f"-> {targets}")
        if self.verdict.note:
            parts.append(f"({self.verdict.note})")
        return " ".join(parts)


@dataclass
class Dialect:
    """One foreign format: its rules, the defaults of keys it omits, keys that change nothing."""

    name: str
    rules: dict[str, Rule]
    defaults: dict[str, Any] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # key → why it changes nothing
    whole_file: Callable[[dict[str, Any]], list[Outcome]] = lambda source: []
    # Keys a dialect does not know but that hold a value: refused (the run may differ).
    unknown_reason: str = "peftstudio does not know what this key does, so the run could differ"
    # The source tool's default of a key, when it can be looked up: an unknown key left at it changes nothing.
    default_of: Callable[[str], Any] | None = None


# ---- rule helpers --------------------------------------------------------------------------

def mapped(*pairs: tuple[str, Any], note: str = "") -> Verdict:
    return Verdict("approximated" if note else "mapped", list(pairs), note)


def approx(pairs: Pairs, note: str) -> Verdict:
    return Verdict("approximated", list(pairs), note)


def to(key: str, convert: Callable[[Any], Any] = lambda v: v) -> Rule:
    """Map the value to one peftstudio key, converted (a converter may raise Refused)."""
    return lambda value, _source: mapped((key, convert(value)))


def ignore(reason: str) -> Rule:
    return lambda _value, _source: Verdict("ignored", note=reason)


def refuse(reason: str) -> Rule:
    def rule(_value, _source):
        raise Refused(reason)
    return rule


def when_set(rule: Rule, reason: str = "off in the source: nothing to carry over") -> Rule:
    """Apply `rule` only when the value is truthy; a false/empty value changes nothing."""
    return lambda value, source: rule(value, source) if value else Verdict("ignored", note=reason)


def switch(value: Any) -> str:
    return "on" if bool(value) else "off"


# ---- the engine ----------------------------------------------------------------------------

def judge(dialect: Dialect, source: dict[str, Any]) -> list[Outcome]:
    """Every source key's outcome (one each), with the source tool's defaults for keys it
    omitted or left null, and the whole-file verdicts (which replace a key's own)."""
    outcomes = {key: judge_key(dialect, key, value, source) for key, value in source.items()}
    for key, default in dialect.defaults.items():
        if source.get(key) is None:
            outcome = judge_key(dialect, key, default, {**source, key: default})
            outcome.from_default = True
            outcomes[key] = outcome
    for outcome in dialect.whole_file(source):
        outcomes[outcome.key] = outcome
    return list(outcomes.values())


def judge_key(dialect: Dialect, key: str, value: Any, source: dict[str, Any]) -> Outcome:
    if value is None:
        default = dialect.defaults.get(key)
        note = "null means unset" + (f"; the tool's default {default!r} applies" if default is not None else "")
        return Outcome(key, value, Verdict("ignored", note=note))
    if key in dialect.ignored:
        return Outcome(key, value, Verdict("ignored", note=dialect.ignored[key]))
    rule = dialect.rules.get(key)
    if rule is None:
        if value in (False, "", [], {}):
            return Outcome(key, value, Verdict("ignored", note="off/empty in the source"))
        if dialect.default_of is not None and dialect.default_of(key) == value:
            return Outcome(key, value, Verdict("ignored", note="the source tool's default value"))
        return Outcome(key, value, Verdict("refused", note=dialect.unknown_reason))
    try:
        return Outcome(key, value, rule(value, source))
    except Refused as reason:
        return Outcome(key, value, Verdict("refused", note=str(reason)))
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        return Outcome(key, value, Verdict("refused", note=f"value not understood ({type(error).__name__}: {error})"))


def describe_value(key: str, value: Any) -> str:
    """A value as it may be shown to the user: credential-like keys are never echoed."""
    return REDACTED if is_secret_name(key) else json.dumps(value, default=str)[:80]
