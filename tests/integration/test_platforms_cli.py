"""`peftstudio detect --json` on this machine, and `peftstudio estimate` beside its API."""

from __future__ import annotations

import json

from peftstudio.api import estimate
from tests.conftest import CPU, GIB, M4, run_cli


def test_detect_json_on_this_machine(tmp_path):
    result = run_cli("detect", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"accelerator", "device_count", "device_memory_bytes", "device_free_memory_bytes", "gpu_bf16",
            "flash_attention_available", "bitsandbytes_available", "cpu_cores", "ram_bytes", "disk_free_bytes",
            "cpu_bf16_flags"} <= set(report["hardware"])
    assert {"platform", "training.precision", "training.attention", "accelerate_config"} <= set(report["recommendations"])


def test_estimate_api_and_cli(tmp_path):
    result = estimate(["model=llama3_8b"], batch_sizes=[1, 2, 4, 8], hardware=M4)
    totals = [item.total_bytes for item in result.estimates]
    rented = estimate(["model=llama3_8b", "peft=qlora"], batch_sizes=[1], hardware=CPU, device_bytes=24 * GIB)
    assert rented.to_dict()["device_memory_bytes"] == 24 * GIB
    assert totals == sorted(totals) and [item.micro_batch_size for item in result.estimates] == [1, 2, 4, 8]
    cli = run_cli("estimate", "model=gemma3_270m", "--batch-sizes", "1,4", "--json", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert [item["micro_batch_size"] for item in report["estimates"]] == [1, 4]
    assert "activations" in report["estimates"][0]["components"]
    bad = run_cli("estimate", "--batch-sizes", "1,x", cwd=tmp_path)
    assert bad.returncode == 2 and "--batch-sizes" in bad.stderr and "Traceback" not in bad.stderr
