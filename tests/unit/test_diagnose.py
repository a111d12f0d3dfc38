"""diagnose on recorded runs: one synthetic run dir per failure class, and a healthy one."""

import dataclasses
import functools
import json
import math

import pytest

from peftstudio import api
from peftstudio.config.schema import RunConfig
from peftstudio.config.validate import load_config
from peftstudio.errors import UserError
from peftstudio.plan.hardware import HardwareProfile
from peftstudio.plan.pipeline import make_plan
from peftstudio.plan.resolve import resolve
from peftstudio.plan.runplan import RunPlan, decisions_of
from tests.conftest import CPU, GIB

CONFIG = {"device": "cuda", "training": {"precision": "bf16", "micro_batch_size": 8, "gradient_accumulation_steps": 2,
                                         "max_seq_length": 2048, "gradient_checkpointing": "off", "num_batches": 100,
                                         "loss_on": "completion", "packing": "off"},
          "optim": {"learning_rate": 2e-4, "warmup_ratio": 0.0, "warmup_steps": None, "max_grad_norm": 0.0},
          "peft": {"dropout": 0.0}}


@functools.cache
def _base_plan() -> RunPlan:
    return make_plan([], hardware=CPU)


def write_run(path, losses, evals=(), config=None, log="", padding_waste=0.05, step_times=None, hardware=None):
    """A run dir with these losses; its plan is the embedded default's with CONFIG and `config`
    on top, on `hardware` (a GPU without bf16 by default); `hardware={}`: no plan at all."""
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, loss in enumerate(losses):
        step = (index + 1) * 10
        lines.append({"step": step, "loss": loss, "grad_norm": 1.0,
                      "step_time": (step_times or [0.5] * len(losses))[index]})
    lines += [{"step": step, "eval_loss": loss} for step, loss in evals]
    lines.sort(key=lambda r: r["step"])
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if hardware != {}:
        base = _base_plan()
        merged = base.config.model_dump(mode="json")
        for layer in (CONFIG, config or {}):
            for section, values in json.loads(json.dumps(layer)).items():
                merged[section] = {**merged.get(section, {}), **values} if isinstance(values, dict) else values
        resolved = RunConfig.model_validate(merged)
        machine = HardwareProfile(**hardware) if hardware else HardwareProfile("cuda", 1, ["GPU"], [40 * GIB])
        plan = dataclasses.replace(base, requested=resolved, config=resolved, decisions=decisions_of(resolved, {}),
                                   hardware=machine, data=dataclasses.replace(base.data, format="chat",
                                                                              padding_waste=padding_waste))
        (path / "plan.json").write_text(plan.to_json())
    (path / "train.log").write_text(log)
    return path


def problems(path):
    return {f.problem: f for f in api.diagnose(path).findings}


FALLING = [3.0, 2.6, 2.3, 2.1, 1.95, 1.85]


def test_healthy_run_has_no_findings(tmp_path):
    assert problems(write_run(tmp_path / "run", FALLING, evals=[(30, 2.4), (60, 2.0)])) == {}


def test_out_of_memory_names_the_changes_the_estimator_says_fit(tmp_path):
    gpu = HardwareProfile("cuda", 1, ["NVIDIA L4"], [24 * GIB], "8.9", gpu_bf16=True)
    config, _ = load_config(["model=llama3_8b", "training.micro_batch_size=8", "training.max_seq_length=2048",
                             "training.gradient_checkpointing=off"])
    resolved = resolve(config, gpu, 0.1).config.model_dump(mode="json")
    log = "2026-01-01 ERROR peftstudio: run failed: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    run = write_run(tmp_path / "run", FALLING[:2], config=resolved, log=log, hardware=dataclasses.asdict(gpu))
    finding = problems(run)["out_of_memory"]
    assert "CUDA out of memory" in finding.evidence
    # Checkpointing alone does not fit 24 GiB; micro-batch 4 with accumulation 2 keeps the
    # effective batch of 8 and does (on CUDA the chunked loss never holds the 8 × 2048 logits).
    assert finding.overrides == ["training.gradient_checkpointing=on", "training.micro_batch_size=4",
                                 "training.gradient_accumulation_steps=2"]
    assert finding.advice[0].startswith("predicted peak") and "on a 24.0 GiB device" in finding.advice[0]
    fitting = [line for line in finding.advice if line.endswith("(fits)")]
    assert fitting[0].startswith(" ".join(finding.overrides)), "the first change that fits is the one to try"


def test_out_of_memory_without_a_plan_still_lists_the_levers(tmp_path):
    log = "RuntimeError: MPS backend out of memory\n"
    finding = problems(write_run(tmp_path / "run", FALLING[:2], log=log, hardware={}))["out_of_memory"]
    assert finding.overrides == ["training.gradient_checkpointing=on"]
    assert "options, least intrusive first" in finding.advice[0]


def test_nan_loss_under_fp16_without_bf16_suggests_fp32_lower_rate_warmup_and_clipping(tmp_path):
    found = problems(write_run(tmp_path / "run", [3.0, 2.5, math.nan, math.nan], config={"training": {"precision": "fp16"}}))
    finding = found["nan_loss"]
    assert "from step 30" in finding.evidence
    assert finding.overrides[:2] == ["training.precision=fp32", "optim.learning_rate=2e-05"]
    assert "optim.warmup_steps=10" in finding.overrides and "optim.max_grad_norm=1.0" in finding.overrides


def test_divergence_is_a_spike_above_the_best_loss(tmp_path):
    found = problems(write_run(tmp_path / "run", [3.0, 2.2, 2.0, 4.5, 3.9, 3.5]))
    assert "step 40" in found["divergence"].evidence
    assert "optim.learning_rate=6e-05" in found["divergence"].overrides


def test_flat_loss_with_a_low_learning_rate_is_no_progress(tmp_path):
    found = problems(write_run(tmp_path / "run", [3.0, 3.0, 2.99, 3.01, 2.995, 3.0],
                               config={"optim": {"learning_rate": 1e-5}}))
    finding = found["no_progress"]
    assert "optim.learning_rate=0.0001" in finding.overrides and "training.loss_on=all" in finding.overrides


def test_eval_loss_rising_while_train_loss_falls_is_overfitting(tmp_path):
    found = problems(write_run(tmp_path / "run", FALLING, evals=[(20, 2.5), (40, 2.7), (60, 3.0)]))
    finding = found["overfitting"]
    assert "step 20" in finding.evidence
    assert "training.num_batches=20" in finding.overrides and "training.early_stopping_patience=2" in finding.overrides


def test_padding_waste_and_stalled_steps_are_slow_steps(tmp_path):
    found = problems(write_run(tmp_path / "run", FALLING, padding_waste=0.45,
                               step_times=[0.5, 0.5, 0.5, 4.0, 0.5, 0.5]))
    finding = found["slow_steps"]
    assert "45% of the tokens" in finding.evidence and "slowest step 4" in finding.evidence
    assert "training.packing=on" in finding.overrides


def test_missing_run_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        api.diagnose(tmp_path / "nope")


def test_tokens_per_second_far_below_the_throughput_model_is_slow_steps(tmp_path):
    gpu = HardwareProfile("cuda", 1, ["NVIDIA H100 80GB HBM3"], [80 * GIB], "9.0", gpu_bf16=True)
    config, _ = load_config(["model=llama3_8b", "training.max_seq_length=1024"])
    resolved = resolve(config, gpu, 0.1).config.model_dump(mode="json")
    run = write_run(tmp_path / "run", FALLING, config=resolved, hardware=dataclasses.asdict(gpu))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "tokens_per_second": 150.0}) + "\n" for r in lines))
    finding = problems(run)["slow_steps"]
    assert "150 tokens/s" in finding.evidence and "throughput model predicts on H100" in finding.evidence
