"""Data shapes of the objectives beyond SFT: detected, checked record by record (file:line),
converted to the conversational rows TRL's DPO / KTO / GRPO trainers take, and the bundled
samples for each, built from the embedded model's tasks.

- preference (dpo, orpo): prompt, chosen, rejected: strings or chat messages (an answer may
  be one message object, as Axolotl's chat_template.default writes it)
- kto (kto): prompt, completion, label (true: desirable, false: undesirable)
- prompt (grpo): prompt (string or chat messages) plus the reference columns the rewards read

Strings become chat turns (user prompt, assistant answer), as `formats.to_trl` does for SFT, so
the one chat template `data/tokenizer.py` chose renders every objective's text.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from peftstudio.data.formats import CHAT_ROLES, _conversation_problem, _missing_column, _show
from peftstudio.errors import Problem, UserError

OBJECTIVE_FORMAT = {"dpo": "preference", "orpo": "preference", "kto": "kto", "grpo": "prompt"}
FORMAT_COLUMNS = {"preference": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label"),
                  "prompt": ("prompt",)}
SAMPLES_DIR = Path(__file__).resolve().parent
SAMPLE_FILES = {"preference": SAMPLES_DIR / "sample_preference.jsonl", "kto": SAMPLES_DIR / "sample_kto.jsonl",
                "prompt": SAMPLES_DIR / "sample_prompts.jsonl"}
# `data.path=embedded:word-prompts`: the GRPO prompts of the three sample tasks whose answer is
# read off the prompt's own words (reverse two words, first letter, capital letters): no fact to
# recall. Reinforcement sharpens what a model already does now and then; it does not teach
# facts. From an SFT adapter that answers some of these right, GRPO with exact_match raises them
# within tens of steps, while on all eight tasks (capitals, antonyms and sums need recall, sorting
# an algorithm the tiny model lacks) the reward stays flat. Repeat-the-word is left out although
# its answer is in the prompt too: GRPO collapsed its counts to one (every word four times).
WORD_PROMPTS = "embedded:word-prompts"
WORD_PROMPTS_FILE = SAMPLES_DIR / "sample_word_prompts.jsonl"
WORD_TASKS = ("Reverse the order of these words.", "What is the first letter of this word?",
              "Write this word in capital letters.")
LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}  # 1 and 0 hash as True, False


def objective_format(objective: str, requested: str, keys: set[str], where: str) -> tuple[str, str]:
    """The data format an objective trains on, and why; a user error when the data is of another shape."""
    name = OBJECTIVE_FORMAT[objective]
    if requested not in ("auto", name):
        raise UserError(Problem("data.format", f"objective={objective} trains on {name} data, not {requested}",
                                f"set data.format=auto (objective={objective} reads {name} data) with columns "
                                f"{', '.join(FORMAT_COLUMNS[name])}"))
    missing = [c for c in FORMAT_COLUMNS[name] if c not in keys]
    if missing:
        message, fix = _missing_column(missing[0], dict.fromkeys(keys), {})
        raise UserError(Problem(where, f"objective={objective} needs {name} data ({', '.join(FORMAT_COLUMNS[name])}): "
                                f"{message}", fix))
    reason = "data.format set explicitly" if requested == name else f"objective={objective}: columns {', '.join(FORMAT_COLUMNS[name])} found"
    return name, reason


def record_problem(values: dict[str, Any], data_format: str, needed: dict[str, str]) -> tuple[str, str] | None:
    """(message, fix) for the first thing wrong with one record of an objective format, or None.
    `needed` maps the columns reward functions read to the key that names them."""
    for column in FORMAT_COLUMNS[data_format]:
        if column not in values:
            return _missing_column(column, values, {})
    problem = _turns_problem(values["prompt"], "prompt", "user")
    if problem:
        return problem
    if data_format == "preference":
        problem = _turns_problem(values["chosen"], "chosen", "assistant") or _turns_problem(values["rejected"], "rejected", "assistant")
        if not problem and _text(values["chosen"]) == _text(values["rejected"]):
            problem = "chosen and rejected are the same: nothing to prefer", "remove the pair or fix one side"
        return problem
    if data_format == "kto":
        if values["label"] not in LABELS or isinstance(values["label"], float):
            return (f"column 'label' must be true or false, got {_show(values['label'])}",
                    "write true for a desirable completion, false for an undesirable one")
        return _turns_problem(values["completion"], "completion", "assistant")
    for column, key in needed.items():
        if values.get(column) is None:
            return (f"missing column {column!r}, read by the reward {key} (found {sorted(values)})",
                    f"add it, map it with data.columns={{{column}: your_column}}, or set {key}.column")
    return None


def _turns_problem(value: Any, column: str, role: str) -> tuple[str, str] | None:
    if isinstance(value, dict) and role == "assistant":  # one answer message (Axolotl's chat_template.default)
        value = [value]
    if isinstance(value, str):
        return None if value.strip() else (f"column {column!r} is empty", "remove the record or fill it in")
    if isinstance(value, list):
        problem = _conversation_problem(value + ([] if role == "assistant" else [{"role": "assistant", "content": "x"}]),
                                        "role", "content", CHAT_ROLES)
        return (f"column {column!r}: {problem[0]}", problem[1]) if problem else None
    return (f"column {column!r} must be text or a list of chat messages, got {_show(value)}",
            f'write a string or [{{"role": "{role}", "content": "..."}}]')


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = [value]
    return value if isinstance(value, str) else " ".join(str(t.get("content", "")) for t in value)


def _turns(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        value = [value]
    return [{"role": t["role"], "content": t["content"]} for t in value]


def to_trl(values: dict[str, Any], data_format: str, keep: tuple[str, ...]) -> dict[str, Any]:
    """One checked record in the conversational shape TRL's trainers take; `keep` columns (the
    rewards' references) travel along unchanged."""
    row: dict[str, Any] = {"prompt": _turns(values["prompt"], "user")}
    if data_format == "preference":
        row.update(chosen=_turns(values["chosen"], "assistant"), rejected=_turns(values["rejected"], "assistant"))
    elif data_format == "kto":
        row.update(completion=_turns(values["completion"], "assistant"), label=LABELS[values["label"]])
    row.update({column: values[column] for column in keep if column in values and column not in row})
    return row


def measured_row(row: dict[str, Any]) -> dict[str, Any]:
    """The longest sequence a row makes, as a prompt/completion row `tokenize_row` measures."""
    if "chosen" in row:
        longer = max(row["chosen"], row["rejected"], key=lambda t: len(_text(t)))
        return {"prompt": row["prompt"], "completion": longer}
    if "completion" in row:
        return {"prompt": row["prompt"], "completion": row["completion"]}
    return {"prompt": row["prompt"], "completion": [{"role": "assistant", "content": "x"}]}


def prepare_objective_rows(settings, objective: str, needed: dict[str, str]) -> tuple[Any, str, str, list]:
    """Read data.path (the bundled sample of the objective for embedded:sample), detect and
    check its format, and convert every record: (source, format, reason, [(where, row)])."""
    from peftstudio.config.schema import EMBEDDED_SAMPLE_DATA
    from peftstudio.data.formats import check_column_mapping, rename_columns
    from peftstudio.data.sources import read_source

    check_column_mapping({k: v for k, v in settings.columns.items() if k not in _OBJECTIVE_COLUMNS})
    if settings.datasets:
        raise UserError(Problem("data.datasets", f"objective={objective} trains on one dataset (data.path) for now",
                                "concatenate the files into one, or leave data.datasets empty"))
    name = OBJECTIVE_FORMAT[objective]
    path = str(SAMPLE_FILES[name]) if settings.path == EMBEDDED_SAMPLE_DATA else settings.path
    source = read_source(path, settings)
    first = rename_columns(source.records[0], settings.columns)
    data_format, reason = objective_format(objective, settings.format, set(first.values), first.where)
    if settings.path == EMBEDDED_SAMPLE_DATA:
        reason += f"; embedded:sample is the bundled {name} sample for objective={objective}"
    elif settings.path == WORD_PROMPTS:
        reason += "; embedded:word-prompts is the bundled prompts of the word tasks (reverse, first letter, capitals)"
    return source, data_format, reason, objective_rows(source, settings, data_format, needed)


_OBJECTIVE_COLUMNS = {"chosen", "rejected", "label", "answer"}


def objective_rows(source, settings, data_format: str, needed: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every record checked (all problems at once, each at its file:line) and converted."""
    from peftstudio.data.formats import rename_columns
    from peftstudio.data.sources import MAX_PROBLEMS

    found: dict[tuple[str, str], list[str]] = {}
    rows = []
    for record in source.records:
        renamed = rename_columns(record, settings.columns)
        problem = record_problem(renamed.values, data_format, needed)
        if problem:
            found.setdefault(problem, []).append(record.where)
        else:
            rows.append((record.where, to_trl(renamed.values, data_format, tuple(needed) + ("answer",))))
    if found:
        problems = [Problem(places[0], message + (f" (and {len(places) - 1} more record(s) like it)" if len(places) > 1 else ""), fix)
                    for (message, fix), places in found.items()]
        raise UserError(problems[:MAX_PROBLEMS], headline=f"{source.source}: {sum(map(len, found.values()))} bad "
                        f"record(s) for format {data_format}" if len(problems) > 1 else None)
    return rows


# --- bundled samples -------------------------------------------------------------------------

def _prompt_of(row: dict[str, str]) -> str:
    return row["instruction"] + (f"\n{row['input']}" if row["input"] else "")


def _task_of(row: dict[str, str]) -> str:
    """The task a sample row comes from: its instruction's first words, numbers blanked."""
    return re.sub(r"\d", "#", " ".join(row["instruction"].split()[:4]))


def _wrong_answer(row: dict[str, str], same_task: list[dict[str, str]], rng: random.Random) -> str:
    """A plausible wrong answer: another row's answer to the same instruction kind."""
    others = [r["output"] for r in same_task if r["output"] != row["output"]]
    return rng.choice(others) if others else row["output"][::-1]


def generate_objective_samples(count: int = 600, seed: int = 4321) -> dict[str, list[dict[str, Any]]]:
    """Preference, KTO and prompt rows built from the SFT sample's tasks: chosen / desirable is
    the task's correct answer, rejected / undesirable the answer of another row of the same
    task, so every label is verifiable and the tiny model can learn it."""
    from peftstudio.data.sample import generate_sample_rows

    rng = random.Random(seed)
    rows = generate_sample_rows(count, seed)
    by_task: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_task.setdefault(_task_of(row), []).append(row)
    preference, kto, prompts = [], [], []
    for index, row in enumerate(rows):
        same = by_task[_task_of(row)]
        prompt, wrong = _prompt_of(row), _wrong_answer(row, same, rng)
        preference.append({"prompt": prompt, "chosen": row["output"], "rejected": wrong})
        good = index % 2 == 0
        kto.append({"prompt": prompt, "completion": row["output"] if good else wrong, "label": good})
        prompts.append({"prompt": prompt, "answer": row["output"]})
    return {"preference": preference, "kto": kto, "prompt": prompts}


def word_prompts(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prompt rows of the word tasks (see WORD_PROMPTS), in their order."""
    return [row for row in prompts if row["prompt"].split("\n")[0] in WORD_TASKS]


def main() -> None:
    """Rewrite the bundled objective samples (committed; rerun when the task mix changes)."""
    from peftstudio.data.sample import write_jsonl

    samples = generate_objective_samples()
    written = {SAMPLE_FILES[name]: rows for name, rows in samples.items()}
    written[WORD_PROMPTS_FILE] = word_prompts(samples["prompt"])
    for path, rows in written.items():
        write_jsonl(rows, path)
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
