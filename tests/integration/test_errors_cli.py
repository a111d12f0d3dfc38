"""User errors through the real CLI: exit 2, one message, no traceback (unless --debug), and
nothing heavy imported or written before the error."""

import subprocess
import sys

from tests.conftest import run_cli


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
