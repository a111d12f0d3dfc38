"""Every real config of the corpus (tests/data/import_corpus, sources in its README): the
import keeps model, data, method and objective, or is refused naming the keys; no traceback;
an imported config plans (offline, local stand-in data, a fake 8-GPU machine)."""

import json
from pathlib import Path

import pytest
import yaml

from peftstudio.config.importers import ImportRefused, judge_file, render_yaml
from peftstudio.errors import EnvironmentProblem, UserError
from peftstudio.plan.pipeline import make_plan
from tests.conftest import EIGHT_H100

CORPUS = Path(__file__).parents[1] / "data/import_corpus"
DATASET_INFO = CORPUS / "llamafactory/dataset_info.json"
FILES = sorted(p for p in CORPUS.glob("*/*") if p.suffix in (".yaml", ".yml"))
STAND_IN = {"instruction": {"instruction": "Say hi", "input": "", "output": "hi"},
            "chat": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            "sharegpt": {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
            "text": {"text": "some text to learn"}, "prompt_completion": {"prompt": "hi", "completion": "hello"}}
STAND_IN["auto"] = STAND_IN["chat"]
# The data shape each objective trains on, for configs that import one (objective=dpo, kto, grpo).
OBJECTIVE_STAND_IN = {"dpo": {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
                      "orpo": {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
                      "kto": {"prompt": "hi", "completion": "hello", "label": True},
                      "grpo": {"prompt": "hi", "answer": "hello"}}


def test_the_corpus_is_the_one_the_readme_lists():
    listed = (CORPUS / "README.md").read_text()
    assert len(FILES) >= 100 and all(f"`{p.parent.name}/{p.name}`" in listed for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_import_keeps_the_meaning_or_refuses(path, tmp_path):
    if path.parent.name == "unknown":
        with pytest.raises(UserError, match="not a recognised config.*Axolotl YAML"):
            judge_file(path, DATASET_INFO)
        return
    result = judge_file(path, DATASET_INFO)
    source = yaml.safe_load(path.read_text())
    keys = [o.key for o in result.outcomes]
    assert set(source) <= set(keys) and len(keys) == len(set(keys)), "every source key has exactly one verdict"
    if result.refused:  # what import_file raises (test_import_dialects checks that it does)
        refused = ImportRefused(result)
        assert {o.key for o in result.refused} == {p.where.split(": ", 1)[1] for p in refused.problems}
        assert all(p.message and "Traceback" not in p.message for p in refused.problems)
        return
    values = result.values
    named = source.get("base_model") or source.get("model_name_or_path")
    assert values.get("model.name_or_path") and named in (None, values["model.name_or_path"]), "the model is kept"
    assert values.get("data.path") and "peft" in result.group_selections, "data and method are kept"
    objective = result.group_selections.get("objective", "sft")
    assert objective == "sft" or {"rl", "stage", "loss_type", "beta"} & set(source), "an objective comes from the source's own"
    plan_with_stand_ins(result, tmp_path)


def plan_with_stand_ins(result, folder: Path) -> None:
    """The imported YAML plans once its data paths point at local files of the same format."""
    values = dict(result.values)
    sources = [{"format": values.get("data.format", "auto")}] + list(values.get("data.datasets", []))
    for index, source in enumerate(sources):
        record = OBJECTIVE_STAND_IN.get(result.group_selections.get("objective")) or STAND_IN[source.get("format", "auto")]
        renamed = {(source.get("columns") or {}).get(k, k): v for k, v in record.items()}
        path = folder / f"d{index}.jsonl"
        path.write_text("\n".join(json.dumps(renamed) for _ in range(20)) + "\n")
        source["path"] = str(path)
        source.pop("split", None), source.pop("subset", None)
    config = folder / "imported.yaml"
    config.write_text(render_yaml(result))
    overrides = [f"data.path={sources[0]['path']}", "data.split=train", "~data.subset", "data.validation_split=0.1",
                 "~data.validation_path", f"training.output_dir={folder}/out", "training.num_batches=5"]
    overrides = [o for o in overrides if not o.startswith("~") or o[1:] in values]
    if len(sources) > 1:
        overrides.append("data.datasets=" + json.dumps(sources[1:]).replace('"', ""))
    if values.get("training.distributed", "none") != "none":
        overrides.append("training.num_processes=8")  # the import says so: the GPU count is the user's to give
    try:
        plan = make_plan(overrides, config, hardware=EIGHT_H100)
    except EnvironmentProblem as problem:  # every user-level check passed; this machine lacks deepspeed (exit 3)
        assert "deepspeed" in problem.problems[0].message
        return
    assert plan.config.model.name_or_path == values["model.name_or_path"]
    assert plan.config.peft.method == result.group_selections["peft"]
