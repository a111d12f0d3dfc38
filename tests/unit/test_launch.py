"""launch: the SkyPilot task for each provider, plus the checks that stop a task that could
not work. SkyPilot's own parser loads the tasks in tests/integration/test_launch_skypilot.py."""

import json
from pathlib import Path

import pytest
import yaml

from peftstudio import api
from peftstudio.errors import UserError


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """Three tasks: RunPod on the cheapest GPU that fits, Vast spot with a bucket and local
    data, and a local (sky local up) cluster."""
    root = tmp_path_factory.mktemp("launch")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {i}", "output": str(i)}) + "\n" for i in range(20)))
    made = {
        "runpod": api.launch(["model=llama3_8b"], None, "runpod", out=root / "runpod.yaml"),
        "vast": api.launch([f"data.path={data}"], None, "vast", gpu="RTX4090:1", spot=True,
                           bucket="s3://peftstudio-test/run1", out=root / "vast.yaml"),
        "local": api.launch([], None, "local", out=root / "local.yaml"),
        "nodes": api.launch(["model=llama3_8b"], None, "runpod", bucket="s3://peftstudio-test/nodes",
                            num_nodes=2, out=root / "nodes.yaml"),
    }
    return made, data


def load(path):
    return yaml.safe_load(Path(path).read_text())


def test_multi_node_task_wires_skypilot_node_rank_and_head_ip_into_the_machine_keys(tasks):
    task = load(tasks[0]["nodes"].task_path)
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"].endswith(":1")
    run = task["run"]
    assert 'HEAD_IP=$(echo "$SKYPILOT_NODE_IPS" | head -n1)' in run
    for wiring in ("training.machine_rank=$SKYPILOT_NODE_RANK", "training.main_process_ip=$HEAD_IP",
                   "training.num_machines=$SKYPILOT_NUM_NODES", "training.distributed=ddp",
                   "training.num_processes=$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))",
                   "training.resume=auto"):
        assert wiring in run
    # Every node sees the checkpoints machine 0 writes: they live on the bucket mount.
    assert task["file_mounts"]["/peftstudio/state"]["source"] == "s3://peftstudio-test/nodes"
    remote = load(tasks[0]["nodes"].config_path)
    assert remote["training"]["checkpoint_dir"].startswith("/peftstudio/state/")


def test_several_nodes_without_a_bucket_are_refused():
    with pytest.raises(UserError, match="--num-nodes: 2 machines need one checkpoint directory"):
        api.launch([], None, "runpod", num_nodes=2, out=Path("unused.yaml"))


def test_runpod_task_picks_the_cheapest_gpu_that_fits_and_resumes(tasks):
    result = tasks[0]["runpod"]
    task = load(result.task_path)
    assert task["resources"]["infra"] == "runpod" and task["resources"]["accelerators"] == result.accelerator
    assert result.option.provider == "runpod" and result.option.peak_memory_gib < result.option.memory_gib
    assert "use_spot" not in task["resources"] and task["resources"]["disk_size"] >= 64
    assert "pip install" in task["setup"] and "training.resume=auto" in task["run"]
    assert task["file_mounts"]["/peftstudio/run.yaml"] == str(result.config_path.resolve())
    assert result.command.startswith(f"sky launch -c {task['name']} ") and "--secret HF_TOKEN" in result.command
    assert api.validate_files([result.config_path]) == {result.config_path: []}, "the remote config is valid"


def test_spot_task_keeps_checkpoints_in_the_bucket(tasks):
    result, data = tasks[0]["vast"], tasks[1]
    task = load(result.task_path)
    assert task["resources"] == {"infra": "vast", "disk_size": 64, "accelerators": "RTX4090:1", "use_spot": True}
    assert task["file_mounts"]["/peftstudio/state"] == {"source": "s3://peftstudio-test/run1", "mode": "MOUNT_CACHED"}
    assert task["file_mounts"]["/peftstudio/data/train.jsonl"] == str(data)
    remote = load(result.config_path)
    assert remote["data"]["path"] == "/peftstudio/data/train.jsonl"
    assert remote["training"]["checkpoint_dir"] == "/peftstudio/state/checkpoints"
    assert remote["training"]["resume"] == "auto" and remote["training"]["precision"] == "auto"
    assert result.command.startswith("sky jobs launch")


@pytest.mark.parametrize("kwargs, message", [
    ({"provider": "lambda", "spot": True, "bucket": "s3://b/x"}, "lambda has no spot"),
    ({"provider": "runpod", "spot": True}, "must live in a bucket"),
    ({"provider": "runpod", "bucket": "/tmp/bucket"}, "not a bucket URL"),
    ({"provider": "vast", "gpu": "T4:1"}, "T4 (16 GiB) is too small"),
    ({"provider": "runpod", "gpu": "H100:2"}, "one GPU"),
    ({"provider": "lambda", "gpu": "RTX4090"}, "not offered by lambda"),
])
def test_tasks_that_could_not_work_are_user_errors(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.launch(["model=llama3_8b"], None, out=tmp_path / "t.yaml", **kwargs)
    assert not (tmp_path / "t.yaml").exists()
