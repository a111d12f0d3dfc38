"""`peftstudio accelerate-config` writes a config accelerate itself loads."""

from accelerate.commands.config.config_args import load_config_from_file

from tests.conftest import run_cli


def test_cli_writes_a_config(tmp_path):
    result = run_cli("accelerate-config", "deepspeed_zero3", "--out", "z3.yaml", "--num-processes", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training.distributed=deepspeed_zero3 training.num_processes=4" in result.stdout
    assert load_config_from_file(str(tmp_path / "z3.yaml")).deepspeed_config["zero_stage"] == 3
    bad = run_cli("accelerate-config", "tpu", "--out", "t.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and "'tpu' is not an accelerate config" in bad.stderr
