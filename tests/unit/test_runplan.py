"""The RunPlan as a versioned artifact: exact round trip, typed decisions, refusal of other
versions, and the checks `train --plan` makes against the machine and the data."""

import dataclasses
import json

import pytest

from peftstudio.config.introspect import flatten
from peftstudio.errors import UserError
from peftstudio.plan.pipeline import execution_data, make_plan, survey, with_measured_micro_batch
from peftstudio.plan.runplan import PLAN_VERSION, Decision, RunPlan
from peftstudio.train.batch_size import BatchSizeResult, Probe
from tests.conftest import CPU, H100, T4

PLANS = {
    "default on cpu": ([], CPU),
    "qlora llama3 on h100": (["model=llama3_8b", "peft=qlora", "training.max_seq_length=512"], H100),
    "epochs on t4": (["training.num_epochs=2", "peft=dora"], T4),
}


@pytest.fixture(scope="module", params=sorted(PLANS))
def plan(request) -> RunPlan:
    overrides, hardware = PLANS[request.param]
    return make_plan(overrides, hardware=hardware)


def test_to_json_and_from_json_round_trip_exactly(plan):
    again = RunPlan.from_json(plan.to_json())
    assert again == plan
    assert again.to_json() == plan.to_json()


def test_a_measured_micro_batch_round_trips_and_is_a_typed_decision():
    base = make_plan(["training.micro_batch_size=auto", "training.gradient_accumulation_steps=2"], hardware=CPU)
    result = BatchSizeResult(4, 4, 16, 34, 8, "estimate", "cpu", None, "RAM",
                             [Probe(8, False, None, 1.0, "oom"), Probe(4, True, 1000, 0.5)], "memory")
    measured = with_measured_micro_batch(base, result)
    assert measured.decisions["training.micro_batch_size"] == Decision(4, "measured", measured.decisions[
        "training.micro_batch_size"].reason)
    assert "2 probe(s) (8 oom, 4 ok)" in measured.decisions["training.micro_batch_size"].reason
    assert RunPlan.from_json(measured.to_json()) == measured


def test_every_resolved_key_has_one_decision_and_the_request_keeps_auto(plan):
    flat = flatten(plan.config.model_dump(mode="json"))
    assert list(plan.decisions) == list(flat)
    assert all(decision.value == flat[key] for key, decision in plan.decisions.items())
    for key, decision in plan.chosen().items():
        assert decision.origin == "auto" and decision.reason
        section, _, name = key.rpartition(".")
        requested = getattr(getattr(plan.requested, section), name) if section else getattr(plan.requested, name)
        assert requested == "auto", f"{key} was chosen, so it was requested as auto"
    assert plan.decisions["training.packing"].origin == "auto"  # no platform preset sets it


def test_a_plan_of_another_version_is_refused_never_misread(plan):
    raw = json.loads(plan.to_json())
    for version in (1, PLAN_VERSION + 1, "2"):
        with pytest.raises(UserError, match=f"plan format version {version!r}"):
            RunPlan.from_dict({**raw, "version": version}, "old.json")
    with pytest.raises(UserError, match="not a peftstudio plan"):
        RunPlan.from_dict({"config": raw["config"]}, "p.json")


def test_a_damaged_plan_is_a_user_error_naming_the_file(plan, tmp_path):
    raw = json.loads(plan.to_json())
    del raw["schedule"]
    with pytest.raises(UserError, match="damaged plan: KeyError"):
        RunPlan.from_dict(raw, "p.json")
    raw = json.loads(plan.to_json())
    raw["hardware"]["gpu_kind"] = "x"
    with pytest.raises(UserError, match="no field"):
        RunPlan.from_dict(raw, "p.json")
    raw = json.loads(plan.to_json())
    raw["hardware"]["cpu_op_us"] = {"1": 10.0}  # a probe the previous version recorded: its runs still resume
    assert RunPlan.from_dict(raw, "p.json").hardware == plan.hardware
    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(UserError, match="p.json: not JSON"):
        RunPlan.read(tmp_path / "p.json")


def test_executing_a_plan_on_other_hardware_names_what_changed():
    plan = make_plan([], hardware=CPU)
    other = dataclasses.replace(CPU, cpu_bf16=True)
    with pytest.raises(UserError, match="made for other hardware: cpu_bf16: planned False, here True"):
        execution_data(plan, other, "plan.json")
    assert execution_data(plan, dataclasses.replace(CPU, ram_available_bytes=1), "plan.json").train, \
        "free memory is not part of what the plan was made for"


def test_executing_a_plan_on_changed_data_is_refused(tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Say {word}", "input": "", "output": word} for word in ("one", "two", "three", "four")]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    plan = make_plan(["data=jsonl", f"data.path={data}", "data.validation_split=0"], hardware=CPU)
    assert len(execution_data(plan, CPU).train) == 4
    data.write_text(data.read_text().replace("three", "THREE"))
    with pytest.raises(UserError, match="the data changed since it was planned"):
        execution_data(plan, CPU)


def test_survey_collects_every_stage_and_schedules_epoch_runs_by_epochs(tmp_path):
    found = survey(["training.num_epochs=2"], hardware=CPU)
    assert found.schedule.mode == "epochs" and found.schedule.optimizer_steps == 2 * found.schedule.steps_per_epoch
    broken = survey(["data=jsonl", f"data.path={tmp_path / 'missing.jsonl'}", "training.save_interval_steps=0"],
                    hardware=CPU)
    assert broken.config_problems, "an out-of-range key is a config problem"
    bad_data = survey(["data=jsonl", f"data.path={tmp_path / 'missing.jsonl'}", "peft.alpha=512"], hardware=CPU)
    assert bad_data.data_problems and not bad_data.config_problems
    assert any("alpha" in warning for warning in bad_data.findings.warnings), "the stages after the data still run"


def test_a_plan_for_one_process_is_refused_under_a_two_process_launcher():
    from peftstudio.settings import ProcessPlace

    plan = make_plan([], hardware=CPU)
    with pytest.raises(UserError, match="the launcher started 2 processes"):
        execution_data(plan, CPU, "plan.json", ProcessPlace(rank=1, world_size=2, local_rank=1))
