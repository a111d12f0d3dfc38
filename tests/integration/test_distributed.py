"""Two-process DDP on CPU over gloo, through the real CLI: `train` launches its own workers.

Equivalence with one process: the same effective batch (micro-batch 2 × accumulation 2 × 2
processes vs micro-batch 2 × accumulation 4 × 1 process) and the same data order. Accelerate
deals the sampler's micro-batches round-robin to the ranks (rank 0 gets batches 0, 2, ..., rank 1
gets 1, 3, ...), so one optimizer step of the 2-process run sees exactly the four micro-batches
the 1-process run accumulates, each padded the same way. LoRA dropout is off: its masks come
from each process's own random stream, which no 1-process run can reproduce, so with dropout
the runs are statistically equivalent but not equal.
"""

import re

import pytest
from safetensors.torch import load_file

from peftstudio.train.distributed import adapter_digest
from tests.integration.two_process import losses, train

pytestmark = pytest.mark.slow
DDP = ["training.distributed=ddp", "training.num_processes=2", "training.gradient_accumulation_steps=2"]


def test_two_process_ddp_equals_one_process_and_resumes_after_a_kill(one_process_run, tmp_path):
    single, ddp = one_process_run, tmp_path / "ddp"

    killed = train(ddp, *DDP, fault="kill_at_step=3")
    assert killed.returncode == 1, killed.stdout + killed.stderr
    assert "a training process failed" in killed.stderr
    checkpoint_root = ddp / "checkpoints/ckpts"
    assert sorted(p.name for p in checkpoint_root.glob("checkpoint-*")) == ["checkpoint-2"]

    resumed = train(ddp, *DDP)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = resumed.stdout
    assert out.count("launching 2 process(es)") == 1 and out.count("schedule ") == 1, "plan printed once"
    assert out.count("resuming from checkpoints/ckpts/checkpoint-2") == 1 and out.count("done at step 4") == 1

    # Rank 0 alone wrote the metrics (each step once); the loss follows the 1-process run.
    distributed, one_process = losses(ddp), losses(single)
    assert [s for s, _, _ in distributed] == [1, 2, 3, 4]
    for (step, loss, tokens), (_, reference_loss, reference_tokens) in zip(distributed, one_process):
        assert abs(loss - reference_loss) < 1e-5, f"step {step}: {loss} vs {reference_loss}"
        assert tokens == reference_tokens, "tokens are counted over both processes"

    # Both replicas ended identical, and the saved adapter is that replica.
    line = next(l for l in (ddp / "outputs/train.log").read_text().splitlines() if "adapter replicas" in l)
    digests = re.findall(r"rank (\d) (\w+)", line)
    assert [rank for rank, _ in digests] == ["0", "1"] and len({d for _, d in digests}) == 1
    assert adapter_digest(load_file(ddp / "outputs/adapter/adapter_model.safetensors")) == digests[0][1]

    # Each checkpoint was committed once: one set of files, one RNG state per rank, nothing staged.
    assert sorted(p.name for p in checkpoint_root.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in checkpoint_root.glob("checkpoint-*"):
        names = {p.name for p in checkpoint.iterdir()}
        assert {"adapter_model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth",
                "trainer_state.json", "peftstudio_state.json"} <= names
        assert "rng_state.pth" not in names
