"""`peftstudio sweep` refuses a bad sweep file before any trial."""

from tests.conftest import run_cli
from tests.unit.test_sweep_spec import GOOD, sweep_file


def test_cli_rejects_a_bad_file_with_exit_2(tmp_path):
    result = run_cli("sweep", str(sweep_file(tmp_path, GOOD.replace("optim.learning_rate", "optim.lr"))), cwd=tmp_path)
    assert result.returncode == 2
    assert "parameters.optim.lr" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "sweeps").exists()
