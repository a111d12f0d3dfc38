"""detect's recommendations on every fake machine, the platform presets, and the memory-aware
auto rules (gradient checkpointing, micro-batch) with their reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftstudio import api
from peftstudio.api import detect, estimate
from peftstudio.config.introspect import flatten
from peftstudio.config.validate import load_config
from peftstudio.plan.platforms import NO_PRESET, recommend_platform
from peftstudio.plan.resolve import resolve
from peftstudio.plan.pipeline import make_plan
from peftstudio.units import GIB
from tests.conftest import CPU, CPU_AMX, FAKE_PROFILES, H100, M4, RTX3070, T4

CONF = Path(__file__).resolve().parents[2] / "src" / "peftstudio" / "config" / "conf" / "platform"
EXPECTED = {
    # profile: (platform preset, precision, attention, accelerate config)
    "cpu": ("cpu", "fp32", "sdpa", "cpu"),
    "cpu_amx": ("cpu", "fp32", "sdpa", "cpu"),
    "h100": ("h100", "bf16", "flash_attention_2", "single_gpu"),
    "a100_40gb": ("a100", "bf16", "flash_attention_2", "single_gpu"),
    "rtx4090": ("rtx4090", "bf16", "sdpa", "single_gpu"),
    "rtx3070": ("none", "bf16", "sdpa", "single_gpu"),
    "t4": ("none", "fp16", "sdpa", "single_gpu"),
    "2xa100": ("a100", "bf16", "flash_attention_2", "multi_gpu"),
    "8xh100": ("h100", "bf16", "flash_attention_2", "multi_gpu"),
    "m4": ("m4", "bf16", "sdpa", "single_gpu"),
}


@pytest.mark.parametrize("name", sorted(FAKE_PROFILES))
def test_detect_recommends_preset_precision_attention_and_accelerate_config(name):
    found = {r.key: r for r in detect(hardware=FAKE_PROFILES[name]).recommendations}
    picked = tuple(found[key].value for key in ("platform", "training.precision", "training.attention", "accelerate_config"))
    assert picked == EXPECTED[name]
    assert all(item.reason for item in found.values())


def test_reasons_name_what_was_found():
    t4 = {r.key: r.reason for r in detect(hardware=T4).recommendations}
    assert "NaN" in t4["training.precision"] and "Tesla T4" in t4["platform"]
    eight = {r.key: r.reason for r in detect(hardware=FAKE_PROFILES["8xh100"]).recommendations}
    assert "8 GPUs" in eight["accelerate_config"]
    amx = {r.key: r.reason for r in detect(hardware=CPU_AMX).recommendations}
    assert "bf16" in amx["training.precision"]  # the embedded model is too narrow to gain from it: the reason says so


def _values(*overrides: str) -> dict:
    config = load_config(list(overrides))[0]
    return {"device": config.device, **config.training.model_dump(), **config.peft.model_dump()}


@pytest.mark.parametrize("preset", ["h100", "a100", "rtx4090", "m4", "cpu"])
def test_platform_presets_leave_the_adapter_alone_and_keep_the_effective_batch(preset):
    default, chosen = load_config([])[0], load_config([f"platform={preset}"])[0]
    assert chosen.peft == default.peft, "adapters must be interchangeable across platforms"
    if chosen.training.micro_batch_size != default.training.micro_batch_size:
        effective = chosen.training.micro_batch_size * chosen.training.gradient_accumulation_steps
        assert effective == 4 == load_config(["model=llama3_8b"])[0].training.micro_batch_size


def test_platform_preset_values():
    h100 = load_config(["model=llama3_8b", "platform=h100"])[0]
    assert (h100.training.max_seq_length, h100.training.micro_batch_size, h100.training.precision) == (4096, 4, "bf16")
    m4 = load_config(["model=llama3_8b", "platform=m4"])[0]
    assert (m4.device, m4.training.max_seq_length, m4.training.micro_batch_size,
            m4.training.gradient_accumulation_steps) == ("mps", 2048, 1, 4)
    assert api.plan(["platform=cpu"], hardware=CPU).config.training.precision == "fp32"
    assert {p.stem for p in CONF.glob("*.yaml")} >= {"auto", "h100", "a100", "rtx4090", "m4", "cpu"}


@pytest.mark.parametrize("name", ["h100", "m4", "cpu"])
def test_platform_auto_resolves_like_the_preset_it_names(name):
    hardware = FAKE_PROFILES[name]
    auto = resolve(load_config(["model=llama3_8b"])[0], hardware, None)
    preset = resolve(load_config(["model=llama3_8b", f"platform={name}"])[0], hardware, None).config
    assert auto.config.platform == name
    for key in ("device", "precision", "attention"):
        left = getattr(auto.config, key, None) or getattr(auto.config.training, key)
        right = getattr(preset, key, None) or getattr(preset.training, key)
        assert left == right, key


AUTO_RUNS = {"embedded": [], "llama3_8b, micro-batch auto": ["model=llama3_8b", "training.micro_batch_size=auto"]}


# Profiles no preset suits (rtx3070, t4) are the next test's case.
WITH_PRESET = sorted(name for name, profile in FAKE_PROFILES.items() if recommend_platform(profile)[0] != NO_PRESET)


@pytest.mark.parametrize("run", sorted(AUTO_RUNS))
@pytest.mark.parametrize("name", WITH_PRESET)
def test_platform_auto_plans_exactly_like_the_preset_it_names(name, run):
    hardware = FAKE_PROFILES[name]
    preset, reason = recommend_platform(hardware)
    auto = api.plan(AUTO_RUNS[run], hardware=hardware)
    chosen = api.plan([*AUTO_RUNS[run], f"platform={preset}"], hardware=hardware)
    resolved, expected = flatten(auto.config.model_dump()), flatten(chosen.config.model_dump())
    assert {key: resolved[key] for key in expected if resolved[key] != expected[key]} == {}
    assert (auto.decisions["platform"].origin, auto.decisions["platform"].reason) == ("auto", reason)
    assert chosen.decisions["platform"].describe().startswith(f"platform={preset}")


@pytest.mark.parametrize("name", sorted(set(FAKE_PROFILES) - set(WITH_PRESET)))
def test_platform_auto_without_a_suiting_preset_resolves_each_value_for_the_machine(name):
    hardware = FAKE_PROFILES[name]
    assert recommend_platform(hardware)[0] == NO_PRESET
    plan = api.plan([], hardware=hardware)
    assert plan.config.platform == NO_PRESET
    assert plan.decisions["platform"].describe().startswith("auto: no preset fits")
    assert "each setting is resolved for it directly" in plan.decisions["platform"].describe()
    composed = load_config([])[0]
    assert plan.config.training.max_seq_length == composed.training.max_seq_length
    assert plan.decisions["training.precision"].describe().startswith("auto: ")


def test_the_user_file_and_overrides_outrank_the_auto_preset(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("training:\n  micro_batch_size: 2\n")
    asked = ["training.max_seq_length=128"]
    auto = api.plan(asked, config_file=user, hardware=H100)
    chosen = api.plan([*asked, "platform=h100"], config_file=user, hardware=H100)
    assert auto.config == chosen.config
    training = auto.config.training
    assert (training.max_seq_length, training.micro_batch_size, training.precision) == (128, 2, "bf16")
    assert auto.decisions["training.max_seq_length"].describe().startswith("override")
    assert auto.decisions["training.micro_batch_size"].describe().startswith("user file")
    assert auto.decisions["device"].describe().startswith("platform=h100 (platform/h100.yaml:")


def test_platform_auto_keeps_measured_cpu_bf16_and_apple_gpus_without_bf16_get_no_preset():
    wide = api.plan(["model=llama3_8b"], hardware=CPU_AMX)
    assert (wide.config.platform, wide.config.training.precision) == ("cpu", "bf16")
    from dataclasses import replace

    old_macos = replace(M4, gpu_bf16=False)
    plan = api.plan([], hardware=old_macos)
    assert plan.config.platform == NO_PRESET and plan.config.training.precision == "fp32"
    assert "without bfloat16" in plan.decisions["platform"].describe()


def test_estimate_applies_the_auto_preset_and_the_plan_keeps_the_request_for_other_machines():
    assert [item.seq_len for item in estimate([], batch_sizes=[1], hardware=H100).estimates] == [4096]
    requested = api.plan([], hardware=CPU).requested
    assert (requested.platform, requested.device, requested.training.precision) == ("auto", "auto", "auto")


def test_gradient_checkpointing_auto_follows_the_memory_estimate():
    big = resolve(load_config(["model=llama3_8b", "training.max_seq_length=4096"])[0], T4, None)
    assert big.config.training.gradient_checkpointing == "on" and "exceeds the 16 GiB" in big.reasons[
        "training.gradient_checkpointing"]
    small = resolve(load_config(["model=gemma3_270m", "training.max_seq_length=512"])[0], H100, None)
    assert small.config.training.gradient_checkpointing == "off" and "fits" in small.reasons[
        "training.gradient_checkpointing"]


def test_micro_batch_auto_picks_the_largest_that_fits():
    result = resolve(load_config(["model=llama3_8b", "training.micro_batch_size=auto"])[0], H100, None)
    size = result.config.training.micro_batch_size
    assert isinstance(size, int) and size >= 1 and "GiB" in result.reasons["training.micro_batch_size"]
    from peftstudio.plan.memory import estimate_memory

    assert estimate_memory(result.config, micro_batch_size=size).fits(H100.device_memory)
    assert not estimate_memory(result.config, micro_batch_size=2 * size).fits(H100.device_memory)
    assert resolve(load_config(["training.micro_batch_size=auto"])[0], CPU, None).config.training.micro_batch_size == 8


def test_plan_warns_with_numbers_and_overrides_that_fit_on_a_small_gpu():
    plan = make_plan(["model=llama3_8b", "training.micro_batch_size=4"], hardware=RTX3070)
    warning = next(w for w in plan.warnings if "exceeds the 8.0 GiB GPU" in w)
    assert "predicted peak memory" in warning and "peft=qlora" in warning and "GiB" in warning
    assert plan.memory["fits"] is False and plan.memory["estimate"]["components"]["base weights"] > 8 * GIB
    t4 = make_plan(["model=llama3_8b", "training.gradient_checkpointing=off"], hardware=T4)
    suggestions = next(w for w in t4.warnings if "exceeds" in w)
    assert "would fit" in suggestions


def test_plan_on_a_roomy_gpu_recommends_a_micro_batch_and_has_no_memory_warning():
    plan = make_plan(["model=gemma3_1b", "training.micro_batch_size=2"], hardware=H100)
    assert plan.memory["fits"] and plan.memory["recommended_micro_batch"] >= 2
    assert not any("exceeds" in w for w in plan.warnings)
