"""`peftstudio plan --price-file`: the cost table from another price file."""

from tests.conftest import run_cli


def test_plan_cli_prints_the_cost_table_with_another_price_file(price_file, tmp_path):
    result = run_cli("plan", "model=llama3_8b", "--price-file", str(price_file), cwd=tmp_path,
                     env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    assert "cloud_b" in result.stdout and "too small for this run: cloud_a/T4" in result.stdout
    assert "prices 2026-11-01" in result.stdout
