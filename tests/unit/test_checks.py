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
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError) as caught:
        make_plan([f"model.name_or_path={tmp_path}"], hardware=CPU)
    assert caught.value.exit_code == 2
    assert f"no config.json in {tmp_path}: not a model directory" in caught.value.render()


@pytest.mark.parametrize("override, where, words", [
    ("seed=-1", "seed", "greater than or equal to 0"),
    ("seed=4294967296", "seed", "less than or equal to 4294967295"),
    ("peft.target_modules=[]", "peft.target_modules", "nothing would train"),
    ("training.num_batches=100000000000000000000000000", "training.num_batches", "less than or equal to 100000000"),
])
def test_plan_refuses_what_train_would_fail_on(override, where, words):
    with pytest.raises(UserError) as caught:
        make_plan([override], hardware=CPU)
    problem = next(p for p in caught.value.problems if p.where == where)
    assert words in problem.message and caught.value.exit_code == 2


def test_a_path_too_long_for_the_filesystem_is_refused(tmp_path):
    with pytest.raises(UserError) as caught:
        make_plan([f"training.output_dir={tmp_path / ('x' * 300)}"], hardware=CPU)
    assert "bytes; this filesystem allows" in caught.value.render() and "training.output_dir" in caught.value.render()
    with pytest.raises(UserError) as caught:
        make_plan([f"training.checkpoint_dir={tmp_path}/{'/'.join(['y' * 200] * 21)}"], hardware=CPU)
    assert "for a whole path" in caught.value.render()


def test_checkpoints_larger_than_the_free_disk_stop_the_plan():
    from dataclasses import replace

    full = replace(CPU, disk_free_bytes=30 * 1024 * 1024)
    with pytest.raises(EnvironmentProblem) as caught:
        make_plan(["training.save_total_limit=3"], hardware=full)
    text = caught.value.render()
    assert caught.value.exit_code == 3 and "the checkpoints need up to" in text and "training.save_total_limit" in text


def test_a_full_disk_during_a_run_is_exit_3_naming_path_and_bytes(tmp_path):
    import errno

    from peftstudio.train.run import out_of_disk

    plan = make_plan([f"training.checkpoint_dir={tmp_path}"], hardware=CPU)
    full = out_of_disk(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint-5")), plan)
    assert full.exit_code == 3 and str(tmp_path / "checkpoint-5") in full.render()
    assert "GiB free" in full.render() and "per checkpoint" in full.render() and "resume" in full.render()
    try:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 371968 vs 371856")
    except RuntimeError as error:
        assert out_of_disk(error, plan).exit_code == 3
    assert out_of_disk(ValueError("something else"), plan) is None
