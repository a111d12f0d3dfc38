"""The accelerate configs peftstudio writes are ones accelerate itself loads and launches with."""

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

from peftstudio.errors import UserError
from peftstudio.launch.accelerate_configs import (CONFIG_NAMES, ProcessLayout, config_name_for, train_overrides,
                                                  write_accelerate_config)
from peftstudio.plan.pipeline import make_plan
from tests.conftest import CPU, H100

EXPECTED_TYPE = {"single_gpu": DistributedType.NO, "multi_gpu": DistributedType.MULTI_GPU,
                 "fsdp": DistributedType.FSDP, "deepspeed_zero2": DistributedType.DEEPSPEED,
                 "deepspeed_zero3": DistributedType.DEEPSPEED, "cpu": DistributedType.MULTI_GPU}


def launch_args(path):
    """What `accelerate launch --config_file path` makes of the file, before starting anything."""
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    _validate_launch_command(args)
    return args


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_accelerate_loads_and_validates_every_config(name, tmp_path):
    processes = 1 if name == "single_gpu" else 2
    path = write_accelerate_config(name, ProcessLayout(num_processes=processes, gradient_accumulation_steps=4),
                                   tmp_path / f"{name}.yaml")
    loaded = load_config_from_file(str(path))
    assert isinstance(loaded, ClusterConfig) and loaded.distributed_type == EXPECTED_TYPE[name]
    assert loaded.num_processes == processes
    args = launch_args(path)
    known = set(vars(launch_command_parser().parse_args(["x.py"])))
    for section in ("fsdp_config", "deepspeed_config"):
        for key in yaml.safe_load(path.read_text()).get(section, {}):
            assert key in known, f"{section}.{key} is not an option accelerate launch knows"
    assert args.num_processes == processes


def test_strategy_options_reach_the_launcher(tmp_path):
    zero3 = launch_args(write_accelerate_config("deepspeed_zero3", ProcessLayout(num_processes=8),
                                                tmp_path / "z3.yaml"))
    assert zero3.use_deepspeed and zero3.zero_stage == 3
    assert zero3.offload_optimizer_device == "cpu" and zero3.offload_param_device == "cpu"
    zero2 = launch_args(write_accelerate_config("deepspeed_zero2", ProcessLayout(num_processes=8), tmp_path / "z2.yaml"))
    assert zero2.zero_stage == 2 and zero2.offload_param_device == "none"
    fsdp = launch_args(write_accelerate_config("fsdp", ProcessLayout(num_processes=4), tmp_path / "f.yaml"))
    assert fsdp.use_fsdp and fsdp.fsdp_version == 2 and fsdp.fsdp_state_dict_type == "SHARDED_STATE_DICT"
    # FSDP on CPU processes: torchrun's launcher (not accelerate's one-process --cpu path), full loading.
    on_cpu = launch_args(write_accelerate_config("fsdp", ProcessLayout(num_processes=2, use_cpu=True),
                                                 tmp_path / "fc.yaml"))
    assert on_cpu.use_fsdp and on_cpu.use_cpu and not on_cpu.cpu and on_cpu.fsdp_cpu_ram_efficient_loading is False
    with pytest.raises(UserError, match="deepspeed_zero2 on CPU"):
        write_accelerate_config("deepspeed_zero2", ProcessLayout(num_processes=2, use_cpu=True), tmp_path / "d.yaml")
    # Several CPU processes must go through the multi-process launcher: accelerate's --cpu path runs one.
    cpu = launch_args(write_accelerate_config("cpu", ProcessLayout(num_processes=2), tmp_path / "c.yaml"))
    assert cpu.multi_gpu and cpu.use_cpu and not cpu.cpu


def test_two_machines_carry_the_rendezvous(tmp_path):
    layout = ProcessLayout(num_processes=16, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1")
    loaded = load_config_from_file(str(write_accelerate_config("multi_gpu", layout, tmp_path / "m.yaml")))
    assert (loaded.num_machines, loaded.machine_rank, loaded.main_process_ip, loaded.main_process_port) == \
        (2, 1, "10.0.0.1", 29500)
    assert "training.machine_rank=1" in train_overrides("multi_gpu", layout)


def test_bad_requests_are_one_user_error(tmp_path):
    with pytest.raises(UserError) as caught:
        write_accelerate_config("multi_gpu", ProcessLayout(num_processes=1, num_machines=2, mixed_precision="fp8"),
                                tmp_path / "x.yaml")
    text = caught.value.render()
    assert "needs 2 or more" in text and "'fp8'" in text and "--main-process-ip" in text
    assert not (tmp_path / "x.yaml").exists()


def test_a_run_picks_its_config():
    assert config_name_for(make_plan(["training.distributed=ddp", "training.num_processes=2"], hardware=CPU).config) == "cpu"
    gpus = H100.__class__(**{**H100.to_dict(), "device_count": 8})
    assert config_name_for(make_plan(["training.distributed=fsdp", "training.num_processes=8"], hardware=gpus).config) == "fsdp"
    assert config_name_for(make_plan([], hardware=H100).config) == "single_gpu"
