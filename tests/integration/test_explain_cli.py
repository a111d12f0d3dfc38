"""`peftstudio explain` on a key, and on a mistyped one."""

from tests.conftest import run_cli


def test_cli_explain_and_unknown(tmp_path):
    result = run_cli("explain", "optim.learning_rate", cwd=tmp_path)
    assert result.returncode == 0 and "1e-06–0.01" in result.stdout
    result = run_cli("explain", "optim.learnin_rate", cwd=tmp_path)
    assert result.returncode == 2 and "did you mean optim.learning_rate" in result.stderr
