"""A mistyped command line is a usage error: exit 2, the usage line, click's message with its
did-you-mean, and no traceback, even under --debug."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args, words", [
    (["plan", "--bogus"], ["No such option: --bogus"]),
    (["plan", "--jsn"], ["No such option: --jsn", "--json"]),
    (["trian"], ["No such command 'trian'", "Did you mean 'train'?"]),
    (["--debug", "trian"], ["Did you mean 'train'?"]),
    (["explain"], ["Missing argument 'key'"]),
    (["estimate", "--batch-sizes", "x"], ["Invalid value for '--batch-sizes'", "--batch-sizes 1,2,4,8"]),
    (["find-batch-size", "--max", "x"], ["Invalid value for '--max'"]),
])
def test_a_mistyped_command_line_is_a_usage_error(tmp_path, args, words):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Usage: ") and "--help' for help" in result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr and "run failed" not in result.stderr


def test_no_arguments_shows_the_help(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2, "a command is required, as click has it"
    assert "Usage:" in result.stdout and "train" in result.stdout
    assert "run failed" not in result.stderr and "Traceback" not in result.stderr
