"""Quantized methods and special inits are checked at plan time: a method that cannot run on
the resolved device is an error with the reason and the fix, never a crash mid-run."""

from dataclasses import replace

import pytest

from peftstudio.errors import EnvironmentProblem, UserError
from peftstudio.plan.pipeline import make_plan
from tests.conftest import CPU, H100, M4


@pytest.mark.parametrize("method,quantization", [("qlora", "nf4"), ("qdora", "nf4")])
def test_quantized_groups_set_nf4_with_double_quant(method, quantization):
    plan = make_plan([f"peft={method}"], hardware=CPU)
    peft = plan.config.peft
    assert (peft.method, peft.quantization, peft.double_quant) == (method, quantization, True)
    assert peft.use_dora is (method == "qdora")


def test_compute_dtype_auto_follows_the_precision_with_a_reason():
    cpu = make_plan(["peft=qlora"], hardware=CPU)
    assert cpu.config.peft.compute_dtype == "fp32"
    assert cpu.decisions["peft.compute_dtype"].origin == "auto"
    assert cpu.decisions["peft.compute_dtype"].reason.startswith("follows training.precision=fp32")
    gpu = make_plan(["peft=qlora"], hardware=H100)
    assert gpu.config.peft.compute_dtype == "bf16" and gpu.config.peft.quantization == "nf4"


def test_quantized_method_on_apple_gpu_is_an_environment_problem():
    with pytest.raises(EnvironmentProblem) as caught:
        make_plan(["peft=qlora"], hardware=M4)
    assert caught.value.exit_code == 3
    assert "bitsandbytes has no Apple GPU (MPS) kernels" in caught.value.render()
    assert "use peft=lora on MPS" in caught.value.render()


def test_quantized_method_without_bitsandbytes_names_the_package():
    with pytest.raises(EnvironmentProblem, match="(?s)needs the bitsandbytes package.*pip install bitsandbytes, or use peft=dora"):
        make_plan(["peft=qdora"], hardware=replace(CPU, bitsandbytes_available=False))


@pytest.mark.parametrize("overrides,message", [
    (["peft=lora", "peft.quantization=nf4"], "nf4 while peft.method=lora"),
    (["peft=qlora", "peft.quantization=none"], "none while peft.method=qlora"),
    (["peft=qlora", "peft.quantization=int8"], "double quantization applies to 4-bit weights only"),
    (["peft=lora", "peft.init=loftq"], "use peft=qlora peft.init=loftq"),
    (["peft=dora", "peft.init=olora"], "use peft=lora peft.init=olora"),
    (["peft=qdora", "peft.use_dora=false"], "peft.method=qdora but peft.use_dora=False"),
    (["peft=qlora", "peft.compute_dtype=fp16", "device=cpu"], "fp16 on CPU"),
    (["peft=qlora", "model.architecture.intermediate_size=200"], "not multiples of 64"),
])
def test_inconsistent_method_settings_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        make_plan(overrides, hardware=CPU)


def test_int8_and_fp4_plan_on_cpu():
    assert make_plan(["peft=qlora", "peft.quantization=int8", "peft.double_quant=false"], hardware=CPU)
    assert make_plan(["peft=qlora", "peft.quantization=fp4"], hardware=CPU).config.peft.quantization == "fp4"


def test_missing_tracker_package_is_an_environment_problem(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(EnvironmentProblem, match="logging.mlflow: on, but the mlflow package is not installed"):
        make_plan(["logging=mlflow"], hardware=CPU)
