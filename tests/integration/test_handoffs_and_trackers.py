"""One tiny run trained through the CLI (in process) with a .env holding secrets, Comet and Trackio
on, gradient histograms watched (MLflow, W&B and TensorBoard stores are grepped for secrets by
test_stopping_and_secrets.py; Phoenix, which writes nothing locally, runs against a real Phoenix
in test_phoenix_live.py); then what it wrote is read back, and it is exported as a merged model,
a GGUF and a vLLM adapter."""

from __future__ import annotations

import json
import os
import sqlite3
import zipfile
from pathlib import Path

import pytest

from peftstudio import redact
from tests.conftest import run_cli

SECRETS = {"HUGGINGFACE_TOKEN": "hf_DotenvSecretToken4242", "WANDB_API_KEY": "wandb-dotenv-secret-4242",
           "MY_SERVICE_PASSWORD": "dotenv-password-4242"}


@pytest.fixture(scope="module")
def trained(model_cache, tmp_path_factory):
    """(root, CLI result): the run's files all live under root."""
    root = tmp_path_factory.mktemp("handoff-run")
    env_file = root / "secrets.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()) + "WANDB_MODE=offline\n")
    saved_known = dict(redact._known)
    cleared = {name: os.environ.pop(name) for name in (*SECRETS, "HF_TOKEN", "COMET_API_KEY") if name in os.environ}
    try:
        result = run_cli(
            "--env-file", str(env_file), "train", "training.num_batches=4", "training.eval_interval_steps=2",
            "training.save_interval_steps=2", "training.log_interval_steps=2", "data.max_samples=40",
            f"training.output_dir={root / 'outputs'}", f"training.checkpoint_dir={root / 'checkpoints'}",
            "logging=[comet,trackio]",
            "logging.project=handoff-tests", "logging.run_name=tiny-handoff", "logging.tags=[tiny,ci]",
            "logging.notes=a tiny run for the hand-off tests", "logging.watch=all",
            "eval.metrics=[exact_match]", "eval.generate_samples=2", "eval.max_new_tokens=6", cwd=root)
    finally:  # run_cli restores the environment; the secrets this process learnt to mask go too
        os.environ.update(cleared)
        redact._known.clear()
        redact._known.update(saved_known)
    assert result.returncode == 0, result.stderr
    return root, result


def _metrics(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "outputs/metrics.jsonl").read_text().splitlines()]


def test_no_dotenv_secret_reaches_anything_the_run_wrote(trained):
    root, result = trained
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "secrets.env"]
    written = {part for p in files for part in p.relative_to(root).parts}
    assert {"outputs", "checkpoints", "comet", "trackio", "adapter", "checkpoint-4"} <= written, written
    assert any(p.name == "train.log" for p in files) and any(p.suffix == ".zip" for p in files)
    for path in files:
        content = path.read_bytes()
        if path.suffix == ".zip":  # Comet's offline archive: compressed, so read each member
            with zipfile.ZipFile(path) as archive:
                content = b"".join(archive.read(member) for member in archive.namelist())
        leaked = [name for name, value in SECRETS.items() if value.encode() in content]
        assert not leaked, f"{leaked} from .env leaked into {path}"
    assert not [value for value in SECRETS.values() if value in result.stdout + result.stderr]


def test_comet_offline_archive_holds_the_metrics_name_tags_and_notes(trained):
    root, _ = trained
    archive = next((root / "outputs/comet").glob("*.zip"))
    with zipfile.ZipFile(archive) as opened:
        text = "".join(opened.read(member).decode("utf-8", "replace") for member in opened.namelist())
    losses = [record["loss"] for record in _metrics(root) if "loss" in record]
    assert len(losses) == 2 and '"train/loss"' in text and '"eval/loss"' in text
    assert all(repr(loss) in text or json.dumps(loss) in text for loss in losses), "the logged values themselves"
    assert "tiny-handoff" in text and "handoff-tests" in text and "a tiny run for the hand-off tests" in text
    assert '"tiny"' in text and '"ci"' in text


def test_trackio_store_in_the_run_dir_holds_every_logged_metric_name_tags_and_notes(trained):
    root, _ = trained
    store = root / "outputs/trackio/handoff-tests.db"  # one SQLite file per project, in RUN_DIR/trackio
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as database:  # read-only: never creates it
        rows = database.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
        (config,) = database.execute("SELECT config FROM configs WHERE run_name = 'tiny-handoff'").fetchone()
    logged = {}
    for run_name, step, metrics in rows:
        assert run_name == "tiny-handoff"
        logged.setdefault(step, {}).update(json.loads(metrics))
    expected = {}
    for record in _metrics(root):
        named = {"loss": "train/loss", "learning_rate": "train/learning_rate", "eval_loss": "eval/loss",
                 "eval/exact_match": "eval/exact_match"}
        expected.setdefault(record["step"], {}).update({named[k]: v for k, v in record.items() if k in named})
    assert sorted(expected) == [2, 4] and all(len(values) == 4 for values in expected.values())
    assert {step: {k: logged[step][k] for k in values} for step, values in expected.items()} == expected
    config = json.loads(config)
    assert config["peftstudio.tags"] == ["tiny", "ci"] and config["peftstudio.notes"] == "a tiny run for the hand-off tests"
    assert config["logging.project"] == "handoff-tests" and config["peft.r"] == 16
    assert config["_Username"] is None, "offline: Trackio asked the hub for no user name"


def test_watch_all_writes_gradient_and_weight_histograms_at_each_logged_step(trained):
    root, _ = trained
    lines = [json.loads(line) for line in (root / "outputs/histograms.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    names = lines[0]["histograms"]
    assert any(n.startswith("gradients/") and "lora_B" in n for n in names)
    assert any(n.startswith("parameters/") for n in names)
    first = next(iter(names.values()))
    assert sum(first["counts"]) == first["num"] and len(first["edges"]) == len(first["counts"]) + 1


def test_export_merged_reloads_and_matches_base_plus_adapter(trained):
    from peftstudio import api

    root, _ = trained
    result = api.export(root / "outputs", "merged", root / "export-merged")
    logits = result.details["logits"]
    assert logits["max_difference"] <= logits["tolerance"] and logits["argmax_agreement"] == 1.0
    assert {"model.safetensors", "config.json", "tokenizer.json", "export.json"} <= set(result.files)


def test_export_gguf_f16_runs_in_llama_cpp_with_transformers_greedy_tokens(trained):
    from peftstudio import api

    root, _ = trained
    result = api.export(root / "outputs", "gguf", root / "export-gguf", quantize="f16")
    check = result.details["gguf"]
    assert check["runner"].startswith("llama-cpp-python"), "llama-cpp-python is a dev dependency"
    assert check["tokens_equal"] and len(check["transformers_tokens"]) == 16
    modelfile = (root / "export-gguf/Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-f16.gguf") and "{{ .Content }}" in modelfile
    assert 'TEMPLATE """<|begin_of_text|>' not in modelfile, "llama.cpp adds the BOS itself (add_bos_token)"
    assert 'PARAMETER stop "<|end_of_turn|>"' in modelfile


def test_export_vllm_writes_the_adapter_vllm_loads_and_the_serve_command(trained):
    from peftstudio import api

    root, _ = trained
    result = api.export(root / "outputs", "vllm", root / "export-vllm")
    assert {"adapter_config.json", "adapter_model.safetensors", "serve.sh"} <= set(result.files)
    assert "--enable-lora" in result.command and f"export-vllm={root / 'export-vllm'}" in result.command
    assert "--max-lora-rank 16" in result.command


def test_env_file_options_are_checked_before_anything_runs(tmp_path):
    missing = run_cli("--env-file", str(tmp_path / "nope.env"), "explain", "peft.r", cwd=tmp_path)
    assert missing.returncode == 2 and f"--env-file: {tmp_path / 'nope.env'} is not a file" in missing.stderr
    both = run_cli("--env-file", str(tmp_path / "x.env"), "--no-env-file", "explain", "peft.r", cwd=tmp_path)
    assert both.returncode == 2 and "given together with --no-env-file" in both.stderr
