"""Resolution against fake hardware: every auto gets a value and a reason."""

import pytest

from peftstudio.config.validate import load_config
from peftstudio.data.tokenization import padding_waste
from peftstudio.plan.resolve import resolve
from peftstudio.plan.pipeline import make_plan
from peftstudio.plan.runplan import Decision
from tests.conftest import CPU, H100, M4, T4


def resolved(hardware, overrides=()):
    config, _ = load_config(list(overrides))
    return resolve(config, hardware, padding_waste=0.4)


def test_cpu_gets_fp32_without_checkpointing():
    result = resolved(CPU)
    training = result.config.training
    assert result.config.device == "cpu"
    assert (training.precision, training.gradient_checkpointing, training.attention) == ("fp32", "off", "sdpa")
    assert "CPU" in result.reasons["training.precision"]


def test_h100_gets_bf16_flash_attention_and_packing():
    result = resolved(H100)
    training = result.config.training
    assert result.config.device == "cuda"
    assert (training.precision, training.attention) == ("bf16", "flash_attention_2")
    assert training.gradient_checkpointing == "off" and "fits" in result.reasons["training.gradient_checkpointing"]
    assert training.packing == "on" and "40.0% of tokens would be padding" in result.reasons["training.packing"]


def test_t4_without_bf16_gets_fp16_and_the_nan_risk_is_named():
    result = resolved(T4)
    assert result.config.training.precision == "fp16"
    assert "NaN" in result.reasons["training.precision"]
    assert result.config.training.attention == "sdpa", "flash-attn not installed there"


def test_mps():
    assert resolved(M4).config.device == "mps"


def test_explicit_values_are_not_touched():
    result = resolved(H100, ["training.precision=fp32", "training.packing=off"])
    assert result.config.training.precision == "fp32" and "training.precision" not in result.reasons
    assert result.config.training.packing == "off"


def test_padding_waste_measures_padding():
    assert padding_waste([10, 10, 10, 10], 2) == 0.0
    assert padding_waste([10, 30], 2) == pytest.approx(1 - 40 / 60)


def test_plan_provenance_marks_auto_values_with_their_reason():
    plan = make_plan([], hardware=CPU)
    assert plan.decisions["training.precision"].origin == "auto" and plan.decisions["training.precision"].reason
    assert plan.decisions["seed"] == Decision(42, "default", "default")
    assert plan.schedule.mode == "steps" and plan.schedule.optimizer_steps == plan.config.training.num_batches


def test_explicit_num_epochs_makes_the_run_epoch_based():
    plan = make_plan(["training.num_epochs=2"], hardware=CPU)
    assert plan.schedule.mode == "epochs"
    assert plan.schedule.optimizer_steps == 2 * plan.schedule.steps_per_epoch
    assert "outranks" in plan.schedule.reason


def test_num_batches_given_as_explicitly_keeps_it_step_based():
    plan = make_plan(["training.num_epochs=2", "training.num_batches=7"], hardware=CPU)
    assert plan.schedule.mode == "steps" and plan.schedule.optimizer_steps == 7


def test_effective_batch():
    plan = make_plan(["training.micro_batch_size=2", "training.gradient_accumulation_steps=3"], hardware=CPU)
    assert plan.schedule.effective_batch == 6


def test_cpu_precision_follows_the_measured_matmul_speedup_at_the_models_width():
    from dataclasses import replace

    probe = {"fp32": {"128": 40.0, "512": 90.0, "1024": 100.0}, "bf16": {"128": 44.0, "512": 250.0, "1024": 800.0}}
    bf16_cpu = replace(CPU, cpu_bf16=True, cpu_matmul_gflops=probe)
    wide = resolved(bf16_cpu, ["model=llama3_8b"])  # width 4096: the widest probe, 8x
    reason = wide.reasons["training.precision"]
    assert wide.config.training.precision == "bf16" and "800 vs fp32 100 GFLOP/s (8.0x)" in reason
    tiny = resolved(bf16_cpu)  # the embedded model, width 128: 1.1x
    assert tiny.config.training.precision == "fp32" and "(1.1x)" in tiny.reasons["training.precision"]
    unmeasured = resolved(replace(CPU, cpu_bf16=True), ["model=llama3_8b"])
    assert unmeasured.config.training.precision == "fp32" and "not measured" in unmeasured.reasons["training.precision"]
    no_units = resolved(CPU, ["model=llama3_8b"])
    assert no_units.config.training.precision == "fp32" and "without bf16" in no_units.reasons["training.precision"]


def test_the_cpu_probes_are_measured_once_per_machine_and_cached(tmp_path):
    import json

    import torch

    from peftstudio.plan.hardware import PROBE_WIDTHS, THREAD_PROBE_WIDTHS, cpu_probes, probe_machine_key, probe_path

    other = probe_path(tmp_path, "another CPU | 1 threads")  # a worker's measurement, another key
    other.write_text('{"machine": "another CPU | 1 threads", "gflops": {}}')
    cached = probe_path(tmp_path, probe_machine_key())
    # An older file holds the precision probe only: it is kept, and the thread and attention probes added.
    cached.write_text(json.dumps({"machine": probe_machine_key(), "gflops": {"fp32": {"128": 12345.6}}}))
    first = cpu_probes(tmp_path)
    assert first["gflops"] == {"fp32": {"128": 12345.6}}
    threads = str(torch.get_num_threads())
    assert set(first["thread_ms"]["fp32"]) == {str(w) for w in THREAD_PROBE_WIDTHS}
    assert set(first["thread_ms"]["fp32"]["128"]) == {"1", threads}
    assert all(set(kernels) == {"masked", "per_sample"} and min(kernels.values()) > 0
               for kernels in first["attention_ms"].values())
    assert other.read_text().startswith('{"machine": "another CPU'), "each machine key keeps its own file"
    cached.write_text(cached.read_text().replace(str(first["thread_ms"]["fp32"]["128"]["1"]), "777.0", 1))
    again = cpu_probes(tmp_path)
    assert again["thread_ms"]["fp32"]["128"]["1"] == 777.0, "read back, not measured again"
    # The attention probe times a fast path: a file from an older model/fast_paths.py REVISION
    # measures it again, and keeps the rest.
    from peftstudio.model.fast_paths import REVISION

    stale = json.loads(cached.read_text())
    assert stale["kernel_revision"] == REVISION
    stale["attention_ms"] = {"bf16": {"masked": 1.0, "per_sample": 999.0}}
    cached.write_text(json.dumps(stale))
    assert cpu_probes(tmp_path)["attention_ms"]["bf16"]["per_sample"] == 999.0, "same revision: read back"
    cached.write_text(json.dumps({**stale, "kernel_revision": REVISION - 1}))
    remeasured = cpu_probes(tmp_path)
    assert remeasured["attention_ms"]["bf16"]["per_sample"] != 999.0
    assert remeasured["thread_ms"]["fp32"]["128"]["1"] == 777.0
    assert json.loads(cached.read_text())["kernel_revision"] == REVISION
    cached.unlink()
    fresh = cpu_probes(tmp_path)["gflops"]
    assert set(fresh["fp32"]) == {str(w) for w in PROBE_WIDTHS} and all(v > 0 for v in fresh["bf16"].values())