"""Each process of a multi-process run knowing its place among the others.

A worker learns its rank from its launcher (torchrun / accelerate launch, read by
`settings.process_place`); in one process alone every helper here is a no-op.
"""

from __future__ import annotations

from contextlib import contextmanager

from peftstudio.settings import process_place


def world_size() -> int:
    """Processes of this run, as the launcher told this process (1 when not launched)."""
    return process_place().world_size


def is_main_process() -> bool:
    return process_place().is_main


@contextmanager
def main_process_first(device: str):
    """Rank 0 runs the block first, the others after it finished (a no-op in one process).

    Joins the process group early for this; the trainer reuses it later."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
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
