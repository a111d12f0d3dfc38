"""The live watchdog: a real run whose weights are made infinite turns NaN, is stopped after
training.nan_patience logs, exits 1, and leaves a diagnosis that names the NaN."""

import json

import pytest

from peftstudio import api
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_nan_run_is_stopped_and_diagnosed(model_cache, tmp_path):
    result = run_cli("train", "training.num_batches=12", "training.log_interval_steps=1", "training.nan_patience=2",
                     "training.micro_batch_size=2", "training.save_interval_steps=12", "data.max_samples=40",
                     "--inject-fault", "inf_weights=3", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "stopped by the watchdog: loss was NaN/inf for 2 consecutive logs (steps 3-4)" in result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in (tmp_path / "outputs/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 4, "stopped at the second NaN log, not at step 12"
    assert not (tmp_path / "outputs/adapter").exists()
    assert not list((tmp_path / "checkpoints/ckpts").glob("checkpoint-*")), "no NaN checkpoint for resume to pick"

    saved = json.loads((tmp_path / "outputs/diagnosis.json").read_text())
    assert saved["findings"][0]["problem"] == "nan_loss"
    assert "from step 3" in saved["findings"][0]["evidence"]
    again = api.diagnose(tmp_path / "outputs")
    assert again.to_dict()["findings"] == saved["findings"]
