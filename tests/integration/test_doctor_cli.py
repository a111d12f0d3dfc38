"""`peftstudio doctor` exits 3 when a check fails."""

import json

from tests.conftest import run_cli


def test_cli_exits_3_on_a_failed_check(model_cache, tmp_path):
    result = run_cli("doctor", "data.path=missing.jsonl", "--json", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert not report["ok"] and report["counts"]["fail"] >= 1
