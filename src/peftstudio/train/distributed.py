"""Each process of a multi-process run knowing its place among the others, and the adapter
they share: gathered from FSDP shards, and checked equal across data-parallel replicas.

A worker learns its rank from its launcher (torchrun / accelerate launch, read by
`settings.process_place`); in one process alone every helper here is a no-op.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from peftstudio.settings import process_place

log = logging.getLogger("peftstudio")


def world_size() -> int:
    """Processes of this run, as the launcher told this process (1 when not launched)."""
    return process_place().world_size


def is_main_process() -> bool:
    return process_place().is_main


@contextmanager
def main_process_first(device: str, timeout_s: int):
    """Rank 0 runs the block first, the others after it finished (a no-op in one process).

    Joins the process group early for this, with its collective timeout (training.process_timeout_s:
    a lost peer makes the others fail after it, never hang); the trainer reuses the group."""
    if world_size() == 1:
        yield
        return
    from datetime import timedelta

    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu", timeout=timedelta(seconds=timeout_s))
    with state.main_process_first():
        yield


def all_gather(value):
    """`value` from every process, in rank order (`[value]` in one process)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def shard_on_cpu(accelerator) -> None:
    """Make an accelerator of CPU processes shard the model with FSDP2 (`fully_shard`).

    accelerate (1.15) applies its FSDP plugin only on GPU-like devices: CPU processes become
    plain MULTI_CPU data parallelism and the plugin is dropped. torch's FSDP2 itself runs on CPU
    over gloo (all-gather / reduce-scatter of DTensor shards), so the FSDP state is set here,
    before the trainer prepares the model; everything after (wrapping, full state dict on save,
    sharded checkpoints) is accelerate's and transformers' own FSDP2 path."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if accelerator.distributed_type == DistributedType.FSDP:
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        raise RuntimeError(f"FSDP on CPU expects accelerate's MULTI_CPU processes, found {accelerator.distributed_type}")
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
        state_dict_type="SHARDED_STATE_DICT", cpu_ram_efficient_loading=False)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP


def gather_trainable(model) -> dict:
    """The full trainable (adapter) weights of an FSDP2-sharded model, on every process.

    Each process holds a shard of each weight (a DTensor); every process takes part in each
    all-gather, in the same order. The gathered tensors are copied: on CPU the gather buffers
    are freed when the layer reshards, which a state dict from accelerate's `get_state_dict`
    still points at ("invalid python storage" on save)."""
    gathered = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            full = parameter.full_tensor() if hasattr(parameter, "full_tensor") else parameter
            gathered[name] = full.detach().clone().cpu()
    return gathered


def adapter_digest(state_dict: dict) -> str:
    """sha256 over an adapter's tensors (names sorted), to compare replicas and saved files."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_replicas_agree(trainer) -> None:
    """In a multi-process data-parallel run every process holds a full adapter replica; they
    must be identical after training, or the processes diverged (logged, and a failure)."""
    from peft import get_peft_model_state_dict

    if trainer.accelerator.num_processes == 1 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        return
    digests = all_gather(adapter_digest(get_peft_model_state_dict(trainer.model)))
    if is_main_process():
        log.info("adapter replicas after training: %s", ", ".join(f"rank {i} {d}" for i, d in enumerate(digests)))
    if len(set(digests)) > 1:
        raise RuntimeError(f"the processes' adapter replicas differ after training: {digests}")
