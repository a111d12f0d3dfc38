"""`logging.watch`: histograms of the adapter's gradients (and, with `all`, its weights) at
every logged step, as wandb.watch draws them, for every tracker that draws histograms and
RUN_DIR/histograms.jsonl.

Gradients are read just before the optimizer step (after clipping, before they are zeroed),
which is the only moment the trainer holds them.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

BINS = 64


def histogram(values) -> dict:
    """Bin edges, counts and the summary TensorBoard's raw histograms need, of a tensor."""
    import torch

    flat = values.detach().float().flatten().cpu()
    counts, edges = torch.histogram(flat, bins=BINS)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "min": float(flat.min()), "max": float(flat.max()),
            "num": int(flat.numel()), "sum": float(flat.sum()), "sum_squares": float((flat * flat).sum())}


class WatchCallback(TrainerCallback):
    def __init__(self, sinks: list, path: Path, mode: str, log_interval: int):
        self.sinks, self.path, self.mode, self.log_interval = sinks, path, mode, log_interval

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1  # the step this optimizer update completes
        if model is None or not state.is_world_process_zero or (step % self.log_interval and step != state.max_steps):
            return
        histograms = {}
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            short = name.removeprefix("base_model.model.").replace(".default", "")
            if parameter.grad is not None:
                histograms[f"gradients/{short}"] = histogram(parameter.grad)
            if self.mode == "all":
                histograms[f"parameters/{short}"] = histogram(parameter)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "histograms": histograms}) + "\n")
        for sink in self.sinks:
            if hasattr(sink, "write_histograms"):
                sink.write_histograms(step, histograms)
