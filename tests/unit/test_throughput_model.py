"""The CPU time model (plan/step_probe.py): the stand-in it times is the run's model (family,
widths, adapter, precision, kernels) cut to fewer blocks, the measurement is cached per machine
and run shape and leaves the caller's RNG and threads as they were, deep models are extrapolated
from 2 and 4 blocks, and runs it cannot time fall back to the FLOP model. How close the timing
comes to real runs is not a unit test: benchmarks/throughput_model.py compares them on a real
machine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from peftstudio.config.validate import load_config
from peftstudio.plan import step_probe
from peftstudio.plan.architecture import adapter_parameters, architecture_of
from peftstudio.plan.resolve import cpu_fast_paths, resolve
from peftstudio.plan.step_probe import CpuStepTiming, cpu_step_timing
from tests.conftest import CPU, H100

# A machine whose probes were measured (detect() on this CPU): the step probe runs only there.
PROBED = replace(CPU, cpu_thread_ms={"fp32": {"128": {"1": 2.0, "2": 1.0}}},
                 cpu_attention_ms={"fp32": {"masked": 1.0, "per_sample": 2.0}})


def _config(*overrides: str):
    return resolve(load_config(["training.precision=fp32", "training.cpu_threads=1", *overrides])[0], PROBED,
                   None).config


def test_the_stand_in_is_the_runs_model_cut_to_fewer_blocks():
    config = _config("peft.r=8", "peft.target_modules=[q_proj,v_proj,down_proj]", "peft.dropout=0.1")
    arch = architecture_of(config)
    step = step_probe._stand_in_step(config, arch, sorted(cpu_fast_paths(config, PROBED)), 2, [8, 6])
    model = dict(zip(step.__code__.co_freevars, (cell.cell_contents for cell in step.__closure__)))["model"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == adapter_parameters(arch.model_copy(update={"num_layers": 2}), config.peft)
    assert model.base_model.model.config.hidden_size == arch.hidden_size
    assert model.base_model.model.config.vocab_size == arch.vocab_size
    dropouts = {type(d).__name__ for m in model.modules() if hasattr(m, "lora_dropout") for d in m.lora_dropout.values()}
    assert dropouts == {"MaskedDropout"}, "the run's kernels (plan's fast paths) are on the stand-in too"
    step()  # a full training step runs


@pytest.mark.parametrize("objective,forwards", [
    ("sft", [(2, True, True)]),
    ("orpo", [(4, True, True)]),  # chosen and rejected of 2 pairs, trained
    ("dpo", [(4, True, True), (4, False, False)]),  # + the adapter-disabled reference, no gradients
    ("kto", [(2, True, True), (2, True, False), (2, False, False), (2, False, False)])])  # + the KL batch
def test_each_objective_steps_through_the_sequences_its_trainer_runs(objective, forwards):
    """(rows, adapter on, gradients) of every forward one stand-in step makes, per objective."""
    config = _config(f"objective={objective}", "training.packing=off")
    step = step_probe._stand_in_step(config, architecture_of(config), [], 2, [8, 6])
    model = dict(zip(step.__code__.co_freevars, (cell.cell_contents for cell in step.__closure__)))["model"]
    seen = []
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    model.base_model.model.model.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(
            (kwargs["input_ids"].shape[0], not q_proj.disable_adapters, torch.is_grad_enabled())), with_kwargs=True)
    step()
    assert seen == forwards
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert (max(dropouts) == 0) == (objective in ("dpo", "kto")), "TRL's disable_dropout for reference scoring"


def test_the_step_is_measured_once_per_shape_and_leaves_rng_and_threads_alone(tmp_path, monkeypatch):
    config = _config("training.packing=off")  # the embedded model: 4 blocks, timed whole
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    timing = cpu_step_timing(config, PROBED, samples=2, seq_len=16, mean_tokens=12, cache_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected), "the probe does not move the caller's RNG"
    assert torch.get_num_threads() == threads
    assert timing.timed_layers == timing.layers == 4 and timing.layer_seconds == 0
    assert timing.seconds == timing.timed_seconds > 0 and timing.tokens == 32
    assert timing.tokens_per_second == pytest.approx(32 / timing.seconds)

    calls = []
    monkeypatch.setattr(step_probe, "_measure", lambda *args: calls.append(args) or {
        "blocks": 4, "step_ms": 1.0, "block_ms": 0.0})
    assert cpu_step_timing(config, PROBED, samples=2, seq_len=16.2, mean_tokens=12.1, cache_dir=tmp_path) == timing, \
        "cached"
    assert calls == []
    for other in ({"samples": 4, "seq_len": 16, "mean_tokens": 12}, {"samples": 2, "seq_len": 16, "mean_tokens": 16}):
        cpu_step_timing(config, PROBED, **other, cache_dir=tmp_path)  # another shape is another measurement
    assert len(calls) == 2


def test_unpacked_rows_are_padded_to_the_runs_mean_length():
    assert step_probe._row_lengths(8, 32, 25.7) == [32, 30, 28, 27, 25, 23, 21, 19]
    assert sum(step_probe._row_lengths(8, 32, 25.7)) / 8 == pytest.approx(25.7, abs=0.2)
    assert step_probe._row_lengths(1, 32, 20) == [32] and step_probe._row_lengths(4, 10, 10) == [10] * 4


def test_deep_models_are_timed_at_two_and_four_blocks(tmp_path, monkeypatch):
    timed = []

    def fake_step(config, arch, paths, layers, lengths):
        timed.append(layers)
        return lambda: None

    monkeypatch.setattr(step_probe, "_stand_in_step", fake_step)
    config = _config("model.architecture.num_layers=10")
    measured = step_probe._measure(config, architecture_of(config), [], [16, 16])
    assert set(timed) == {2, 4} and measured["blocks"] == 4
    timing = CpuStepTiming(timed_seconds=0.2, timed_layers=4, layer_seconds=0.05, layers=10, tokens=64)
    assert timing.seconds == pytest.approx(0.2 + 6 * 0.05)


def test_runs_the_probe_cannot_time_fall_back(tmp_path):
    config = _config()
    assert cpu_step_timing(config, CPU, 2, 16, cache_dir=tmp_path) is None, "a profile whose probes were not measured"
    assert cpu_step_timing(resolve(load_config([])[0], H100, None).config, H100, 2, 16, cache_dir=tmp_path) is None
    assert cpu_step_timing(_config("objective=grpo"), PROBED, 2, 16, cache_dir=tmp_path) is None, "mostly generation"
    huge = _config("model.architecture.hidden_size=8192", "model.architecture.intermediate_size=28672",
                   "model.architecture.vocab_size=128256", "model.architecture.num_heads=64",
                   "model.architecture.num_kv_heads=8", "model.architecture.head_dim=128")
    assert cpu_step_timing(huge, PROBED, 2, 16, cache_dir=tmp_path) is None, "too large to time at plan time"
    assert not (tmp_path / step_probe.PROBE_DIR).exists()


def test_a_stand_in_that_cannot_be_built_leaves_the_time_to_the_flop_model(tmp_path, monkeypatch):
    def fails(*args):
        raise ValueError("Target modules {'c_attn'} not found in the base model")

    monkeypatch.setattr(step_probe, "_stand_in_step", fails)
    assert cpu_step_timing(_config(), PROBED, 2, 16, cache_dir=tmp_path) is None
    assert not (tmp_path / step_probe.PROBE_DIR).exists(), "nothing cached: the next plan tries again"


def test_plan_times_the_step_and_the_studio_only_reads_what_plan_timed(tmp_path, monkeypatch):
    from peftstudio import api
    from peftstudio.plan.cost import cost_report

    monkeypatch.setenv("PEFTSTUDIO_CACHE", str(tmp_path / "cache"))
    plan = api.plan(["training.precision=fp32", "training.cpu_threads=1", f"training.output_dir={tmp_path}/out"],
                    hardware=PROBED)
    calls = []
    measure = step_probe._measure
    monkeypatch.setattr(step_probe, "_measure", lambda *args: calls.append(args) or measure(*args))
    studio = cost_report(plan, time_cpu_step=False).local
    assert calls == [] and studio.basis.endswith("`peftstudio plan` times a step of this shape on this CPU instead")
    timed = cost_report(plan).local
    assert len(calls) == 1 and timed.basis.startswith("measured: a micro-batch step of this model's shape")
    again = cost_report(plan, time_cpu_step=False).local
    assert len(calls) == 1 and again == timed, "the studio reads the step plan timed"
    work = cost_report(plan).workload
    assert timed.hours == pytest.approx(work.useful_tokens / timed.tokens_per_second / 3600), "non-padding tokens/s"
