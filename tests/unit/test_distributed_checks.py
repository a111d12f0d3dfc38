"""Scale-out keys: contradictory layouts are user errors, impossible ones environment problems."""

import pytest

from peftstudio.errors import EnvironmentProblem, UserError
from peftstudio.plan.pipeline import make_plan
from peftstudio.settings import ProcessPlace
from tests.conftest import CPU, H100, M4

EIGHT_GPUS = H100.__class__(**{**H100.to_dict(), "device_count": 8})


def test_ddp_on_two_cpu_processes_plans():
    plan = make_plan(["training.distributed=ddp", "training.num_processes=2", "training.micro_batch_size=2"],
                     hardware=CPU)
    assert plan.schedule.effective_batch == 2 * 2


def test_several_processes_need_a_strategy_and_a_strategy_needs_processes():
    with pytest.raises(UserError, match="2 with training.distributed=none"):
        make_plan(["training.num_processes=2"], hardware=CPU)
    with pytest.raises(UserError, match="nothing to distribute"):
        make_plan(["training.distributed=ddp"], hardware=CPU)


def test_machine_layout_errors_come_together():
    with pytest.raises(UserError) as caught:
        make_plan(["training.distributed=ddp", "training.num_processes=3", "training.num_machines=2",
                   "training.machine_rank=2"], hardware=EIGHT_GPUS)
    text = caught.value.render()
    assert "cannot be split evenly" in text and "training.machine_rank: 2" in text and "main_process_ip" in text


@pytest.mark.parametrize("strategy", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_on_cpu_is_an_environment_problem(strategy):
    with pytest.raises(EnvironmentProblem) as caught:
        make_plan([f"training.distributed={strategy}", "training.num_processes=2"], hardware=CPU)
    text = caught.value.render()
    assert caught.value.exit_code == 3 and "DeepSpeed's ZeRO engine needs CUDA GPUs; this run is on cpu" in text
    assert "training.distributed=fsdp (shards over gloo on CPU)" in text


def test_fsdp_on_cpu_plans_and_on_mps_is_refused():
    plan = make_plan(["training.distributed=fsdp", "training.num_processes=2"], hardware=CPU)
    assert plan.config.training.distributed == "fsdp"
    with pytest.raises(EnvironmentProblem, match="fsdp on Apple MPS"):
        make_plan(["training.distributed=fsdp", "training.num_processes=2"], hardware=M4)


def test_deepspeed_not_installed_names_the_fix(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else find_spec(name, *a))
    with pytest.raises(EnvironmentProblem, match="pip install deepspeed"):
        make_plan(["training.distributed=deepspeed_zero2", "training.num_processes=8"], hardware=EIGHT_GPUS)
    assert make_plan(["training.distributed=fsdp", "training.num_processes=8"], hardware=EIGHT_GPUS)


def test_more_processes_than_gpus_or_on_mps():
    with pytest.raises(EnvironmentProblem, match="has 1 GPU"):
        make_plan(["training.distributed=ddp", "training.num_processes=2"], hardware=H100)
    with pytest.raises(EnvironmentProblem, match="no multi-process backend for MPS"):
        make_plan(["training.distributed=ddp", "training.num_processes=2"], hardware=M4)


def test_more_cpu_processes_than_cores_warns():
    plan = make_plan(["training.distributed=ddp", "training.num_processes=4"], hardware=CPU)
    assert any("processes compete for cores" in warning for warning in plan.warnings)


def test_a_foreign_launcher_must_match_num_processes():
    worker = ProcessPlace(rank=1, world_size=4, local_rank=1)
    with pytest.raises(UserError, match="the launcher started 4 processes"):
        make_plan([], hardware=CPU, place=worker)
    make_plan(["training.distributed=ddp", "training.num_processes=4"], hardware=CPU, place=worker)
