"""Write a SkyPilot task for a run: resources (GPU, cloud, spot), setup (install peftstudio),
run (train the resolved config with resume=auto), file mounts (config, data, and a bucket for
checkpoints so a preempted spot job continues where it stopped).

SkyPilot names: `infra` is the cloud (runpod, lambda, vast; kubernetes for a local cluster made
with `sky local up`), `accelerators` is NAME:COUNT. Spot jobs go through `sky jobs launch`,
which relaunches a preempted job; its new machine finds the checkpoints in the bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peftstudio.config.schema import EMBEDDED_SAMPLE_DATA, RunConfig
from peftstudio.errors import Problem, UserError
from peftstudio.files import write_text
from peftstudio.plan.cost import CostOption

INFRA = {"runpod": "runpod", "lambda": "lambda", "vast": "vast", "local": "kubernetes"}
SPOT_PROVIDERS = ("runpod", "vast")
REMOTE_ROOT = "/peftstudio"
BUCKET_SCHEMES = ("s3://", "gs://", "r2://", "https://")


@dataclass(frozen=True)
class TaskSpec:
    """What the task needs beyond the config: where it runs and how it is installed."""

    provider: str
    accelerator: str | None  # SkyPilot NAME:COUNT, None for a CPU-only local run
    spot: bool
    bucket: str | None
    disk_gb: int
    source_dir: Path | None  # a peftstudio checkout to install from (synced as the workdir)
    version: str
    extras: list[str]
    num_nodes: int = 1  # machines, one GPU each; more than one needs the bucket (shared checkpoints)


def check_nodes(num_nodes: int, bucket: str | None) -> None:
    if num_nodes < 1:
        raise UserError(Problem("--num-nodes", f"{num_nodes}", "use 1 or more"))
    if num_nodes > 1 and bucket is None:
        raise UserError(Problem("--num-nodes", f"{num_nodes} machines need one checkpoint directory they all see: "
                                "machine 0 writes the checkpoints, every machine resumes from them",
                                "add --bucket s3://BUCKET/PATH (or gs://, r2://)"))


def check_spot(provider: str, spot: bool, bucket: str | None) -> None:
    if spot and provider not in SPOT_PROVIDERS:
        raise UserError(Problem("--spot", f"{provider} has no spot (interruptible) instances in SkyPilot",
                                f"drop --spot, or use --provider {' / '.join(SPOT_PROVIDERS)}"))
    if spot and bucket is None:
        raise UserError(Problem("--spot", "a preempted spot job restarts on a new machine: its checkpoints must "
                                          "live in a bucket to resume", "add --bucket s3://BUCKET/PATH (or gs://, r2://)"))
    if bucket is not None and not bucket.startswith(BUCKET_SCHEMES):
        raise UserError(Problem("--bucket", f"{bucket!r} is not a bucket URL", "use s3://, gs://, r2:// or https:// (Azure)"))


def state_dir(spec: TaskSpec) -> str:
    """Checkpoints and outputs: the mounted bucket, or a directory on the machine's own disk
    (kept while the cluster exists, so `sky launch` on the same cluster resumes)."""
    return f"{REMOTE_ROOT}/state" if spec.bucket else "~/peftstudio-state"


def remote_config(config: RunConfig, spec: TaskSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """The config as the remote run uses it, and the file mounts it needs (remote → local).
    `auto` values stay auto: the remote machine resolves them for its own GPU."""
    values = config.model_dump(mode="json")
    mounts: dict[str, str] = {}
    if config.data.path != EMBEDDED_SAMPLE_DATA:
        local = Path(config.data.path).expanduser().resolve()
        remote = f"{REMOTE_ROOT}/data/{local.name}"
        mounts[remote] = str(local)
        values["data"]["path"] = remote
    state = state_dir(spec)
    values["training"].update(output_dir=f"{state}/outputs", checkpoint_dir=f"{state}/checkpoints", resume="auto")
    return values, mounts


def task_name(config: RunConfig) -> str:
    model = config.model.name_or_path.rpartition("/")[2].rpartition(":")[2]
    return re.sub(r"[^a-z0-9-]+", "-", f"peftstudio-{model}-{config.peft.method}".lower()).strip("-")[:60]


def build_task(config: RunConfig, spec: TaskSpec, config_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task, remote config): the SkyPilot task as a mapping, and the config file it mounts."""
    values, mounts = remote_config(config, spec)
    resources: dict[str, Any] = {"infra": INFRA[spec.provider], "disk_size": spec.disk_gb}
    if spec.accelerator:
        resources["accelerators"] = spec.accelerator
    if spec.spot:
        resources["use_spot"] = True
    file_mounts: dict[str, Any] = {f"{REMOTE_ROOT}/run.yaml": str(config_path.resolve()), **mounts}
    if spec.bucket:
        file_mounts[state_dir(spec)] = {"source": spec.bucket, "mode": "MOUNT_CACHED"}
    task: dict[str, Any] = {"name": task_name(config), "resources": resources}
    if spec.num_nodes > 1:
        task["num_nodes"] = spec.num_nodes
    if spec.source_dir is not None:
        task["workdir"] = str(spec.source_dir)
    task.update({"secrets": {"HF_TOKEN": None}, "file_mounts": file_mounts,
                 "setup": _setup(spec), "run": _run(spec, config.training.distributed)})
    return task, values


def _setup(spec: TaskSpec) -> str:
    package = "." if spec.source_dir is not None else f"peftstudio=={spec.version}"
    lines = ["set -euo pipefail", "python3 -m pip install --upgrade pip",
             f"python3 -m pip install '{package}'"]
    lines += [f"python3 -m pip install '{extra}'" for extra in spec.extras]
    return "\n".join(lines) + "\n"


def _run(spec: TaskSpec, distributed: str = "none") -> str:
    state = state_dir(spec)
    script = ("set -euo pipefail\n"
              f"mkdir -p {state}\n"
              "# resume=auto: a relaunched (preempted) job continues from its newest complete checkpoint\n")
    if spec.num_nodes == 1:
        return script + f"peftstudio train --config {REMOTE_ROOT}/run.yaml training.resume=auto\n"
    # SkyPilot starts this script on every node with its rank and every node's address (the
    # head's first); one process per node's GPU, the head hosts the rendezvous.
    strategy = "ddp" if distributed == "none" else distributed
    return script + (
        'HEAD_IP=$(echo "$SKYPILOT_NODE_IPS" | head -n1)\n'
        f"peftstudio train --config {REMOTE_ROOT}/run.yaml training.resume=auto training.distributed={strategy} \\\n"
        "  training.num_machines=$SKYPILOT_NUM_NODES training.machine_rank=$SKYPILOT_NODE_RANK \\\n"
        "  training.main_process_ip=$HEAD_IP \\\n"
        "  training.num_processes=$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))\n")


class _TaskDumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as YAML block literals, readable as the scripts they are."""


def _represent_text(dumper: yaml.SafeDumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_TaskDumper.add_representer(str, _represent_text)


def write_task(task: dict[str, Any], values: dict[str, Any], task_path: Path, config_path: Path) -> None:
    task_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(config_path, "# the run config of " + task_path.name + " (auto values resolve on the remote GPU)\n"
               + yaml.safe_dump(values, sort_keys=False))
    header = "# SkyPilot task written by `peftstudio launch`; start it with the command it printed\n"
    write_text(task_path, header + yaml.dump(task, Dumper=_TaskDumper, sort_keys=False))


def launch_command(task: dict[str, Any], task_path: Path, spec: TaskSpec) -> str:
    secret = " --secret HF_TOKEN"
    if spec.spot:
        return f"sky jobs launch -n {task['name']} {task_path}{secret}"
    prefix = "sky local up && " if spec.provider == "local" else ""
    return f"{prefix}sky launch -c {task['name']} {task_path}{secret}"


def describe_option(option: CostOption | None) -> str:
    if option is None:
        return ""
    from peftstudio.plan.cost import fmt_hours

    price = f"US$ {option.cost_low:.2f}" + (f"–{option.cost_high:.2f}" if option.cost_high != option.cost_low else "")
    return (f"{option.provider} {option.gpu} ({option.memory_gib:g} GiB): predicted peak {option.peak_memory_gib:.1f} GiB, "
            f"~{option.tokens_per_second:,.0f} tokens/s, {fmt_hours(option.hours)}, {price}")
