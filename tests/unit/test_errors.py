"""Every error class: one readable message, the key, the value, the fix — all at once."""


import pytest

from peftstudio.config.validate import load_config
from peftstudio.errors import UserError


def problems_of(overrides, config_file=None) -> str:
    with pytest.raises(UserError) as caught:
        load_config(overrides, config_file)
    return caught.value.render()


def test_unknown_key_names_the_closest_valid_one():
    text = problems_of(["training.num_batchs=10"])
    assert "training.num_batchs: unknown key" in text and "did you mean training.num_batches?" in text


def test_unknown_top_level_section():
    assert "did you mean training?" in problems_of(["trainig.micro_batch_size=2"])


def test_wrong_type_names_key_value_and_range():
    text = problems_of(["optim.learning_rate=fast"])
    assert "optim.learning_rate: 'fast' is invalid" in text and "1e-06–0.01" in text


def test_out_of_range_names_the_allowed_range():
    text = problems_of(["training.micro_batch_size=0"])
    assert "training.micro_batch_size: 0 is invalid" in text and "1–1024" in text


def test_bad_choice_lists_the_choices():
    assert "one of auto, bf16, fp16, fp32" in problems_of(["training.precision=fp8"])


def test_unknown_group_option_lists_the_options():
    text = problems_of(["peft=lorra"])
    assert "unknown peft option 'lorra' (did you mean lora?)" in text and "options: dora, lora, pissa, qdora, qlora, rslora" in text


def test_all_problems_in_one_message():
    text = problems_of(["training.micro_batch_size=0", "peft=nope", "optim.lr=1", "training.precision=x"])
    assert text.startswith("invalid config: 4 problems")
    for fragment in ("micro_batch_size", "peft option 'nope'", "optim.lr", "training.precision"):
        assert fragment in text


def test_user_file_errors_point_at_the_line(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("training:\n  micro_batch_size: 4\n  save_every: 10\n")
    assert f"user file ({user}:3)" in problems_of([], user)


def test_broken_yaml_points_at_the_line(tmp_path):
    user = tmp_path / "run.yaml"
    user.write_text("training:\n  micro_batch_size: [4\n")
    assert f"{user}:3" in problems_of([], user) or f"{user}:2" in problems_of([], user)


def test_required_value_from_a_group(tmp_path):
    assert "data.path: required but not set" in problems_of(["data=jsonl"])
