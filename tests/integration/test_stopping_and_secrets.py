"""Early stopping with the best checkpoint kept, trackers, and secrets that never reach the run
dir, the checkpoints, the logs or the tracker files."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_early_stopping_keeps_the_best_checkpoint(model_cache, tmp_path):
    # A threshold no eval can beat: the first eval (step 2) is the best, two more without
    # improvement stop the run at step 6. Step 2 is not a save step: the improving eval forces one.
    result = run_cli("train", "training.num_batches=30", "training.eval_interval_steps=2", "training.save_interval_steps=4",
                     "training.log_interval_steps=2", "training.early_stopping_patience=2",
                     "training.early_stopping_threshold=100", "training.metric_for_best_model=eval_loss",
                     "training.save_total_limit=1", "data.max_samples=60", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stopped early" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "outputs/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 6
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6] and all(r["eval_perplexity"] > 1 for r in evals)
    kept = sorted(p.name for p in (tmp_path / "checkpoints/ckpts").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-6"], "newest plus the best (step 2), beyond save_total_limit=1"
    state = json.loads((tmp_path / "checkpoints/ckpts/checkpoint-6/peftstudio_state.json").read_text())
    assert state["best_step"] == 2 and state["evaluations_without_improvement"] == 2
    summary = json.loads((tmp_path / "outputs/summary.json").read_text())
    assert summary["stopped_early"] and summary["final_step"] == 6 and summary["best_step"] == 2
    assert summary["best_checkpoint"].endswith("checkpoint-2") and summary["best_metric"] == evals[0]["eval_loss"]


def test_trackers_log_and_secrets_never_leak(model_cache, tmp_path):
    secrets = {"HF_TOKEN": "hf_FAKEsecret123456789", "WANDB_API_KEY": "wandbFAKEsecret987654321",
               "HUGGING_FACE_HUB_TOKEN": "hf_FAKEsecretHUB424242"}
    # With a key W&B would go online; WANDB_MODE=offline keeps the test off the network.
    result = run_cli("train", "training.num_batches=2", "training.save_interval_steps=2", "training.log_interval_steps=1",
                     "logging=[tensorboard,wandb,mlflow]", "data.max_samples=40", cwd=tmp_path,
                     env={**secrets, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "outputs"
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "W&B wrote its offline run inside the run dir"
    mlflow_run = next((out / "mlruns").glob("*/*/metrics"))
    assert (mlflow_run / "train_loss").read_text().count("\n") == 2, "one MLflow point per logged step"
    params = {p.name for p in (mlflow_run.parent / "params").iterdir()}
    assert {"peft.method", "optim.learning_rate", "training.micro_batch_size"} <= params
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("checkpoint-2" in str(p) for p in files) and any("mlruns" in str(p) for p in files)
    for path in files:
        content = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in content, f"{value} leaked into {path}"
    for value in secrets.values():
        assert value not in result.stdout + result.stderr


def test_no_secret_channel_reaches_any_file_the_run_writes(model_cache, tmp_path):
    """Every channel a secret can come in by: environment variables, a .env file, a URI with
    credentials, ${oc.env:...} interpolation; grepped for in every file the run writes, its
    output and its error messages."""
    import stat

    secrets = {"HF_TOKEN": "hf_FAKEsecretTOKEN55555", "MY_URI": "http://alice:UriPassw0rd777@127.0.0.1:9",
               "MY_PROJECT": "project-s3cr3t-from-env", "MY_TEMPLATE": "template-s3cr3t-from-env"}
    (tmp_path / ".env").write_text("DOTENV_SECRET=dotenv-s3cr3t-value\n")
    result = run_cli("train", "training.num_batches=2", "training.save_interval_steps=2", "data.max_samples=40",
                     "logging=mlflow", "logging.mlflow_tracking_uri=${oc.env:MY_URI}", "logging.on_error=warn",
                     "logging.wandb_project=${oc.env:MY_PROJECT}", cwd=tmp_path, env=secrets)
    assert result.returncode == 0, result.stderr
    assert "unreachable" in result.stdout and "training goes on without it" in result.stdout
    direct = run_cli("plan", "logging=mlflow", "logging.mlflow_tracking_uri=http://bob:DirectPassw0rd888@127.0.0.1:9",
                     "--out", "plan-direct.json", cwd=tmp_path)
    assert direct.returncode == 3 and "bob:***@127.0.0.1:9" in direct.stderr
    echoed = run_cli("plan", "data.chat_template=${oc.env:MY_TEMPLATE}", cwd=tmp_path, env=secrets)
    assert echoed.returncode == 2 and "${oc.env:MY_TEMPLATE}" in echoed.stderr
    values = ["hf_FAKEsecretTOKEN55555", "UriPassw0rd777", "project-s3cr3t-from-env", "template-s3cr3t-from-env",
              "dotenv-s3cr3t-value", "DirectPassw0rd888"]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".env"]
    assert {"config.resolved.yaml", "plan.json", "peftstudio_state.json", "train.log", "metrics.jsonl"} <= \
        {p.name for p in files}
    for path in files:
        content = path.read_bytes()
        assert not [v for v in values if v.encode() in content], f"a secret leaked into {path}"
    for text in (result.stdout + result.stderr, direct.stdout + direct.stderr, echoed.stdout + echoed.stderr):
        assert not [v for v in values if v in text]
    saved = (tmp_path / "outputs/config.resolved.yaml").read_text()
    assert "${oc.env:MY_URI}" in saved and "${oc.env:MY_PROJECT}" in saved, "interpolations are kept unresolved"
    for name in ("outputs/config.resolved.yaml", "outputs/plan.json", "outputs/train.log",
                 "checkpoints/ckpts/checkpoint-2/peftstudio_state.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, f"{name} is readable by others"
