"""What the 2-process tests (DDP, FSDP) share: the run they compare, and its 1-process twin.

Equivalence with one process: the same effective batch (micro-batch 2 × accumulation 2 × 2
processes vs micro-batch 2 × accumulation 4 × 1 process) and the same data order. LoRA dropout
is off (its masks come from each process's own random stream) and precision is pinned to fp32
(`auto` measures the CPU, and a bf16 choice in one run but not the other differs by ~1e-3)."""

import json

import pytest

from tests.conftest import run_cli

COMMON = ["peft.dropout=0", "training.precision=fp32", "training.num_batches=4", "training.max_seq_length=64",
          "data.max_samples=64", "training.micro_batch_size=2", "training.log_interval_steps=1",
          "training.save_interval_steps=2"]
SINGLE = ["training.gradient_accumulation_steps=4"]


def train(workdir, *extra, fault=None):
    workdir.mkdir(exist_ok=True)
    return run_cli("train", *COMMON, *extra, *(["--inject-fault", fault] if fault else []), cwd=workdir)


def losses(workdir):
    records = [json.loads(line) for line in (workdir / "outputs/metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["tokens_seen"]) for r in records if "loss" in r]


@pytest.fixture(scope="session")
def one_process_run(model_cache, tmp_path_factory):
    """The 1-process reference both 2-process tests compare with, trained once per session."""
    single = tmp_path_factory.mktemp("one-process")
    reference = train(single, *SINGLE)
    assert reference.returncode == 0, reference.stderr
    return single
