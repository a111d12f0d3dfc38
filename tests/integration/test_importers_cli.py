"""`peftstudio import` writes a YAML that `peftstudio validate` accepts."""

import json

from tests.conftest import run_cli
from tests.unit.test_importers import WIZARD


def test_cli_writes_a_yaml_that_plans(tmp_path, model_cache):
    (tmp_path / "wizard.json").write_text(json.dumps(WIZARD))
    result = run_cli("import", "wizard.json", "--out", "run.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "imported wizard JSON: 10 key(s) mapped, 0 not mapped" in result.stderr
    assert run_cli("validate", "run.yaml", cwd=tmp_path).returncode == 0
