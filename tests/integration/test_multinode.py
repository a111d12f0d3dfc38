"""Two "machines" on one box: two `peftstudio train` invocations with num_machines=2,
machine_rank=0|1 and main_process_ip=127.0.0.1 (one process each, gloo), sharing one run
directory as machines share a network filesystem or a bucket mount.

torchrun's static rendezvous (a c10d TCPStore on machine 0) keeps each machine's rank its
`machine_rank`, so machine 0 holds global rank 0 and alone writes the run dir. Machine 1's
training process is SIGKILLed at step 3 (its launcher then exits): machine 0 must stop with a
message naming the lost contact, within training.process_timeout_s at worst; both resume.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from peftstudio.launch.processes import free_port

pytestmark = pytest.mark.slow
COMMON = ["peft.dropout=0", "training.precision=fp32", "training.num_batches=4", "training.max_seq_length=64",
          "data.max_samples=64", "training.micro_batch_size=2", "training.log_interval_steps=1",
          "training.save_interval_steps=2", "training.gradient_accumulation_steps=2",
          "training.distributed=ddp", "training.num_processes=2", "training.num_machines=2",
          "training.main_process_ip=127.0.0.1", "training.process_timeout_s=30"]
# Seconds the surviving machine may take to stop after the other is gone: gloo sees the closed
# connection at its next collective; the 30 s process-group timeout is the backstop.
SURVIVOR_DEADLINE_S = 90


def start_machine(workdir, rank: int, port: int, *extra: str):
    return subprocess.Popen([sys.executable, "-m", "peftstudio", "train", *COMMON, f"training.machine_rank={rank}",
                             f"training.main_process_port={port}", *extra], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr



def test_two_machines_train_together_a_lost_machine_stops_the_other_and_both_resume(model_cache, tmp_path):
    port = free_port()
    machines = [start_machine(tmp_path, 0, port), start_machine(tmp_path, 1, port, "--inject-fault", "kill_at_step=3")]
    lost_code, _, lost_err = finish(machines[1])
    lost_at = time.monotonic()
    try:
        code, stdout, stderr = finish(machines[0], timeout=SURVIVOR_DEADLINE_S)
    finally:
        if machines[0].poll() is None:
            os.killpg(machines[0].pid, signal.SIGKILL)
    stopped_after = time.monotonic() - lost_at
    assert lost_code == 1 and "machine 1 of 2 failed or lost contact" in lost_err
    assert code == 1, stdout + stderr
    assert "machine 0 of 2 failed or lost contact with the other machines" in stderr
    print(f"machine 0 stopped {stopped_after:.1f} s after machine 1's launcher exited")
    assert sorted(p.name for p in (tmp_path / "checkpoints/ckpts").glob("checkpoint-*")) == ["checkpoint-2"]

    port = free_port()
    machines = [start_machine(tmp_path, rank, port) for rank in (0, 1)]
    (code0, out0, err0), (code1, out1, err1) = finish(machines[0]), finish(machines[1])
    assert code0 == 0 and code1 == 0, out0 + err0 + out1 + err1
    assert "resuming from checkpoints/ckpts/checkpoint-2" in out0 and "done at step 4" in out0
    assert "launching 1 process(es) on this machine (ddp, 2 in total)" in out1
    # Machine 0 wrote the run dir: each step once, its own launch config; machine 1's went elsewhere.
    records = [json.loads(line) for line in (tmp_path / "outputs/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert "machine_rank: 0" in (tmp_path / "outputs/accelerate.yaml").read_text()
    checkpoint = tmp_path / "checkpoints/ckpts/checkpoint-4"
    assert {"rng_state_0.pth", "rng_state_1.pth", "adapter_model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
