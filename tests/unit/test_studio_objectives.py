"""The studio's method step for objectives beyond SFT (issue 13 item 7): the objective choices
with their "best for" lines, the GRPO reward editor's values, the preference-pair preview and
the estimate panel, through FastAPI's test client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peftstudio.config.objective_schema import OBJECTIVE_BEST_FOR, OBJECTIVES
from peftstudio.studio.wizard import WizardState, state_from_yaml, translate
from tests.unit.test_studio_api import make_client

WIZARD_JS = Path(__file__).resolve().parents[2] / "src/peftstudio/studio/static/wizard.js"
# A pattern with the characters the override grammar quotes and escapes.
REWARDS = [{"name": "exact_match", "weight": 1.0, "column": "answer"},
           {"name": "format", "pattern": "^\\S+ it's, [x]$", "weight": 0.25}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("studio")) as test_client:
        yield test_client


def state(objective: str, **values) -> dict:
    return {"groups": {"model": "tiny", "objective": objective}, "values": {"training.num_batches": 4, **values}}


def test_objectives_come_with_their_best_for_line_from_python_only(client):
    presets = client.get("/api/presets").json()
    assert [o["name"] for o in presets["objective"]] == list(OBJECTIVES)
    for option in presets["objective"]:
        assert option["best_for"] == OBJECTIVE_BEST_FOR[option["name"]]
    assert "chosen, rejected" in presets["objective"][1]["data"]
    script = WIZARD_JS.read_text()
    assert not any(line[:40] in script for line in OBJECTIVE_BEST_FOR.values())  # not duplicated in the browser
    rewards = {r["name"]: r["arguments"] for r in presets["rewards"]["builtins"]}
    assert rewards["format"] == ["pattern"] and rewards["json_field_match"] == ["column", "field"]
    step2 = {f["key"] for f in next(s for s in client.get("/api/steps").json() if s["step"] == 2)["fields"]}
    assert {"dpo.beta", "kto.desirable_weight", "grpo.num_generations", "peft.r"} <= step2
    assert "grpo.rewards" not in step2  # edited by the reward editor


def test_reward_editor_values_reach_the_plan_and_the_yaml(client):
    body = state("grpo", **{"grpo.rewards": json.dumps(REWARDS), "grpo.num_generations": "2", "dpo.beta": "0.3"})
    checked = client.post("/api/validate", json=body).json()
    assert checked["ok"], checked["problems"]
    planned = checked["plan"]["config"]["grpo"]["rewards"]
    assert [(r["name"], r["weight"], r["column"], r["pattern"]) for r in planned] == \
        [("exact_match", 1.0, "answer", None), ("format", 0.25, None, REWARDS[1]["pattern"])]
    document = yaml.safe_load(checked["yaml"])
    assert {"objective": "grpo"} in document["defaults"]
    assert document["grpo"]["num_generations"] == 2 and document["dpo"]["beta"] == 0.3
    assert document["grpo"]["rewards"][1]["pattern"] == REWARDS[1]["pattern"]
    # The job's YAML read back as wizard state gives the same overrides (the studio's "edit YAML").
    again, problems = state_from_yaml(checked["yaml"], None)
    assert not problems and json.loads(again.values["grpo.rewards"])[1]["pattern"] == REWARDS[1]["pattern"]
    assert translate(again, None).overrides == translate(WizardState(**body), None).overrides


def test_a_bad_reward_is_a_problem_at_its_key(client):
    checked = client.post("/api/validate", json=state("grpo", **{"grpo.rewards": '[{"name": "regex"}]'})).json()
    assert not checked["ok"]
    assert any(p["where"].startswith("grpo.rewards") and "pattern" in p["message"] for p in checked["problems"])
    odd = client.post("/api/validate", json=state("grpo", **{"grpo.rewards": '[{"a b": 1}]'}))
    assert odd.status_code == 200 and not odd.json()["ok"]


def test_estimate_panel_is_the_objectives(client):
    figures = {}
    for objective in ("sft", "dpo", "grpo"):
        estimate = client.post("/api/estimate", json={"state": state(objective)}).json()
        assert estimate["ok"] and estimate["objective"] == objective
        figures[objective] = estimate["memory"]["components"]
        if objective != "sft":
            assert "reference" in estimate["objective_line"]
    assert "reference log-probs" in figures["dpo"] and "reference log-probs" not in figures["sft"]
    assert figures["dpo"]["activations"] == 2 * figures["sft"]["activations"]  # chosen and rejected in one pass
    # micro_batch_size counts completions: 4 prompts × G=8 is 32 sequences in one micro-batch
    grown = client.post("/api/estimate", json={"state": state("grpo", **{"grpo.num_generations": "8",
                                                                       "training.micro_batch_size": "32"})}).json()
    assert grown["memory"]["micro_batch_size"] == 32
    assert grown["memory"]["components"]["activations"] > figures["grpo"]["activations"]


def test_preference_upload_previews_its_pairs_and_suggests_the_objective(client):
    rows = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 7)} for i in range(12)]
    upload = client.post("/api/datasets?name=pairs.jsonl", content="\n".join(map(json.dumps, rows)).encode()).json()
    known = {row["prompt"]: row for row in rows}
    shown = client.post("/api/preview", json={**state("dpo"), "dataset": upload["id"]}).json()
    assert shown["ok"] and shown["format"] == "preference" and shown["rows"] == 12 and len(shown["pairs"]) == 3
    for pair in shown["pairs"]:
        assert pair == known[pair["prompt"]]  # prompt / chosen / rejected as written
    as_sft = client.post("/api/preview", json={**state("sft"), "dataset": upload["id"]}).json()
    assert not as_sft["ok"] and "dpo or orpo" in as_sft["suggestion"]
    assert as_sft["pairs"] == shown["pairs"]


def test_a_reward_list_that_would_explode_is_refused_not_built(client):
    laughs = "[{a: &a [1,1,1,1,1,1,1,1,1,1]}, {b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]}, {c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]}," \
             " {d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]}, {e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}]"
    checked = client.post("/api/validate", json=state("grpo", **{"grpo.rewards": laughs}))
    assert checked.status_code == 200 and not checked.json()["ok"]
