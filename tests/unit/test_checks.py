"""Cross-field checks: reported together, before anything is loaded."""

import pytest

from peftstudio.errors import EnvironmentProblem, UserError
from peftstudio.plan.pipeline import make_plan
from tests.conftest import CPU, H100


def test_method_flags_must_agree():
    with pytest.raises(UserError, match="peft.method=dora but peft.use_dora=False"):
        make_plan(["peft=dora", "peft.use_dora=false"], hardware=CPU)


def test_several_cross_field_errors_at_once():
    with pytest.raises(UserError) as caught:
        make_plan(["training.precision=fp16", "peft.use_dora=true", "training.resume=/nope"], hardware=CPU)
    text = caught.value.render()
    assert "fp16 is not supported" in text and "use peft=dora" in text and "/nope not found" in text


def test_cuda_requested_without_a_gpu_is_an_environment_problem():
    with pytest.raises(EnvironmentProblem) as caught:
        make_plan(["device=cuda"], hardware=CPU)
    assert caught.value.exit_code == 3


def test_bf16_on_a_gpu_without_it():
    from tests.conftest import T4

    with pytest.raises(UserError, match="no bfloat16"):
        make_plan(["training.precision=bf16"], hardware=T4)


def test_warnings_for_alpha_and_intervals():
    plan = make_plan(["peft.alpha=200", "training.eval_interval_steps=1000", "training.save_interval_steps=1000"],
                     hardware=H100)
    text = " ".join(plan.warnings)
    assert "peft.alpha=200 is far from" in text
    assert "the only evaluation is the final one" in text and "the only checkpoint is the final one" in text


def test_early_stopping_needs_validation():
    with pytest.raises(UserError, match="needs evaluation"):
        make_plan(["training.early_stopping_patience=2", "data.validation_split=0"], hardware=CPU)


def test_eight_bit_optimizers_need_bitsandbytes():
    import dataclasses

    make_plan(["optim.name=paged_adamw_8bit"], hardware=CPU)  # installed: fine on CPU too
    without = dataclasses.replace(CPU, bitsandbytes_available=False)
    with pytest.raises(EnvironmentProblem, match="paged_adamw_8bit needs the bitsandbytes package"):
        make_plan(["optim.name=paged_adamw_8bit"], hardware=without)


def test_a_local_dir_that_is_not_a_model_is_refused_at_plan_time(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError) as caught:
        make_plan([f"model.name_or_path={tmp_path}"], hardware=CPU)
    assert caught.value.exit_code == 2
    assert f"no tokenizer files in {tmp_path}: not a model directory" in caught.value.render()
