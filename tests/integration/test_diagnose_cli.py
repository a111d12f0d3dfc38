"""`peftstudio diagnose --json` on a recorded run."""

import json
import math

from tests.conftest import run_cli
from tests.unit.test_diagnose import write_run


def test_cli_json(tmp_path):
    write_run(tmp_path / "run", [3.0, math.inf, math.nan])
    result = run_cli("diagnose", "run", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not report["healthy"] and report["findings"][0]["problem"] == "nan_loss"
