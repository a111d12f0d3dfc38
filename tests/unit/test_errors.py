"""Every error class: one readable message, the key, the value, the fix — all at once."""

import subprocess
import sys

import pytest

from peftstudio.config.validate import load_config
from peftstudio.errors import UserError
from tests.conftest import run_cli


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


def test_cli_user_error_exits_2_without_traceback(tmp_path):
    result = run_cli("plan", "training.micro_batch_size=0", "training.num_batchs=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "2 problems" in result.stderr and "did you mean training.num_batches?" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "plan", "training.micro_batch_size=0", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_config_errors_come_before_torch_is_imported(tmp_path):
    """Time to first error must not pay for torch/transformers: they are never imported."""
    code = ("import sys\nfrom peftstudio.cli import main\nsys.argv=['peftstudio','train','training.x=1']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    heavy=[m for m in ('torch','transformers','trl','peft') if m in sys.modules]\n"
            "    print(e.code, heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr


def test_validate_command_reports_each_file(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("peft:\n  r: 8\n  alpha: 16\n")
    bad.write_text("peft:\n  r: 0\n  rank: 8\n")
    result = run_cli("validate", str(good), str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "✓" in result.stdout and "2 problem(s)" in result.stderr and "peft.rank" in result.stderr


def test_missing_config_file_is_a_user_error(tmp_path):
    result = run_cli("plan", "--config", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_bad_data_is_reported_with_file_line_and_nothing_is_written(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    result = run_cli("train", "data=jsonl", "data.path=data.jsonl", cwd=tmp_path)
    assert result.returncode == 2 and "data.jsonl:2: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"], "no run dir or checkpoint dir left behind"
