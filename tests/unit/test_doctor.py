"""doctor: a good environment passes; a missing dataset, an unwritable dir, a full disk,
clashing packages and a GPU request on a CPU machine each fail with a fix."""

import dataclasses
import json
import os

from peftstudio import api
from peftstudio.doctor.packages import check_packages
from peftstudio.units import MIB
from tests.conftest import CPU, GIB

FAST = ["data.max_samples=40"]


def statuses(report):
    return {c.name: c for c in report.checks}


def test_good_environment_passes(tmp_path):
    report = api.doctor(FAST + [f"training.output_dir={tmp_path}/out", f"training.checkpoint_dir={tmp_path}/ck"],
                        hardware=CPU, environ={"HF_TOKEN": "hf_secret_value_123"})
    assert not report.failed, [c for c in report.checks if c.status == "fail"]
    checks = statuses(report)
    assert checks["HF_TOKEN"].detail == "set (value not shown)"
    assert "hf_secret_value_123" not in json.dumps(report.to_dict())
    assert checks["dataset"].status == "pass" and checks["free disk"].status == "pass"
    assert checks["packages work together"].status == "pass"


def unwritable_dir(tmp_path):
    """A directory this process cannot write in: chmod for a normal user; root ignores file
    modes, so for root a place no one can create files in (/proc)."""
    if os.geteuid() == 0:
        return "/proc/1/peftstudio-out"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return str(locked / "out")


def test_broken_environment_fails_each_check_with_a_fix(tmp_path):
    full_disk = dataclasses.replace(CPU, disk_free_bytes=MIB)
    report = api.doctor([f"data.path={tmp_path}/missing.jsonl", f"training.output_dir={unwritable_dir(tmp_path)}",
                         f"training.checkpoint_dir={tmp_path}/ck", "device=cuda"], hardware=full_disk, environ={})
    checks = statuses(report)
    assert report.failed
    assert checks["dataset"].status == "fail" and "data file not found" in checks["dataset"].detail
    assert checks["training.output_dir writable"].status == "fail"
    assert checks["training.checkpoint_dir writable"].status == "pass"
    assert checks["free disk"].status == "fail" and "save_total_limit" in checks["free disk"].fix
    assert checks["accelerator"].status == "fail" and checks["accelerator"].fix


def test_disk_check_counts_kept_checkpoints(tmp_path):
    base = [f"training.output_dir={tmp_path}/o", f"training.checkpoint_dir={tmp_path}/c", "model=llama3_8b"]
    roomy = dataclasses.replace(CPU, disk_free_bytes=4 * GIB)  # 8B r=16: ~0.5 GiB a checkpoint
    keep_three = statuses(api.doctor(base, hardware=roomy, environ={}))["free disk"]
    keep_many = statuses(api.doctor(base + ["training.save_total_limit=40"], hardware=roomy, environ={}))["free disk"]
    assert keep_three.status == "pass" and keep_many.status == "fail"


def test_clashing_package_versions_fail():
    versions = {"torch": "2.13.0", "transformers": "4.40.0", "peft": "0.21.2", "trl": "1.16.0",
                "accelerate": "1.15.0", "datasets": "5.2.0"}
    requirements = {"trl": ["transformers>=4.56.2", "accelerate>=1.4.0"], "peftstudio": ["transformers==5.23.0"]}
    checks = {c.name: c for c in check_packages(versions, lambda name: requirements.get(name, []))}
    assert checks["packages work together"].status == "fail"
    assert "trl 1.16.0 needs transformers>=4.56.2, found transformers 4.40.0" in checks["packages work together"].detail
    assert checks["package transformers"].status == "warn"
