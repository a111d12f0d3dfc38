"""Where the time of a real `peftstudio train` step goes: the benchmark workload (26M Llama,
variable-length rows, benchmarks/workload.py) trained in this process through peftstudio's own
API (every `auto` resolved as the CLI resolves it), with torch.profiler recording a few steps
after warm-up from a trainer callback.

    PYTHONPATH=src python benchmarks/profile_train.py [--steps 4] [--skip 3] [KEY=VALUE ...]

KEY=VALUE are extra `peftstudio train` overrides (e.g. training.precision=fp32). Prints the
operators by self CPU time, then the step's wall time split into operator groups and what no
operator accounts for (Python, the Trainer, the data loader and collator, the callbacks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import build_dataset, build_model  # noqa: E402

# Self-time operator groups, first match wins. The backward of a LoRA dropout is an aten::mul
# by the saved mask; it stays in element-wise (the dropout row is its forward: the random mask).
GROUPS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int4pack_mm", "mkldnn")),
    ("attention (SDPA forward + backward)", ("aten::_scaled_dot_product", "aten::_flash_attention")),
    ("LoRA dropout masks (bernoulli_ and its div_; numpy's masks)", ("aten::bernoulli_", "aten::div_",
                                                                     "lora_dropout_mask")),
    ("casts and copies", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")),
    ("optimizer (AdamW) and grad clipping", ("aten::_foreach", "aten::addcdiv", "aten::lerp", "aten::sqrt",
                                             "aten::norm", "aten::linalg_vector_norm", "aten::_fused_adam")),
    ("loss (log_softmax, nll)", ("aten::_log_softmax", "aten::nll_loss", "aten::log_softmax")),
    ("element-wise: mul/add/silu/pow/mean/rsqrt/rotary...", ("aten::mul", "aten::add", "aten::silu", "aten::pow",
                                                          "aten::mean", "aten::rsqrt", "aten::neg", "aten::cat",
                                                          "aten::sum", "aten::fill_", "aten::zero_", "aten::sub",
                                                          "aten::where", "aten::index", "aten::embedding",
                                                          "aten::threshold", "aten::sigmoid")),
)


class ProfileSteps:
    """A TrainerCallback: profiles `steps` optimizer steps after `skip` warm-up steps."""

    def __init__(self, skip: int, steps: int):
        from torch.profiler import ProfilerActivity, profile

        self.skip, self.steps = skip, steps
        self.profiler = profile(activities=[ProfilerActivity.CPU])
        self.wall = 0.0

    def __getattr__(self, name):  # the other TrainerCallback hooks: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.profiler.__enter__()
            self.wall = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip + self.steps:
            self.wall = time.perf_counter() - self.wall
            self.profiler.__exit__(None, None, None)


def summarize(callback: ProfileSteps) -> None:
    events = callback.profiler.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=25))
    wall_us = callback.wall * 1e6
    shares: dict[str, float] = {name: 0.0 for name, _ in GROUPS}
    other = 0.0
    for event in events:
        group = next((name for name, prefixes in GROUPS if event.key.startswith(prefixes)), None)
        if group is not None:
            shares[group] += event.self_cpu_time_total
        elif event.key.startswith(("aten::", "mkldnn")):
            other += event.self_cpu_time_total
    shares["other aten operators"] = other
    shares["no operator: Python, Trainer, collator, callbacks, dispatch"] = wall_us - sum(shares.values())
    print(f"{callback.steps} steps, {callback.wall / callback.steps * 1e3:.0f} ms wall per step")
    print("| where | ms per step | share |\n| --- | --- | --- |")
    for name, micros in shares.items():
        print(f"| {name} | {micros / callback.steps / 1e3:.0f} | {micros / wall_us:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/peftstudio-profile-train"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from peftstudio.api import train

    model = build_model(args.workdir / "model")
    data = build_dataset(args.workdir / "data.jsonl", rows=args.micro_batch * (args.skip + args.steps + 1))
    out = args.workdir / "run"
    callback = ProfileSteps(args.skip, args.steps)
    train([f"model.name_or_path={model}", f"data.path={data}", "data.validation_split=0",
           f"training.micro_batch_size={args.micro_batch}", f"training.num_batches={args.skip + args.steps + 1}",
           f"training.output_dir={out / 'outputs'}", f"training.checkpoint_dir={out / 'checkpoints'}",
           "training.resume=never", *args.overrides],
          on_plan=lambda plan: print(*(f"auto {key} = {d.value}: {d.reason}" for key, d in plan.decisions.items()
                                       if d.origin == "auto"), sep="\n"),
          callbacks=[callback])
    summarize(callback)


if __name__ == "__main__":
    main()
