"""One tiny run trained through the CLI (in process) with a .env holding secrets, Comet and Phoenix
(an OTLP collector on 127.0.0.1) on, gradient histograms watched (MLflow, W&B and TensorBoard
stores are grepped for secrets by test_stopping_and_secrets.py); then
what it wrote is read back, and it is exported as a merged model, a GGUF and a vLLM adapter."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from peftstudio import redact
from tests.conftest import run_cli

SECRETS = {"HUGGINGFACE_TOKEN": "hf_DotenvSecretToken4242", "WANDB_API_KEY": "wandb-dotenv-secret-4242",
           "MY_SERVICE_PASSWORD": "dotenv-password-4242"}


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace collector (what `phoenix serve` listens with): keeps decoded spans."""

    spans: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                              ExportTraceServiceResponse)

        request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    Collector.spans.append({"name": span.name, "resource": resource, "attributes": attributes,
                                            "parent": span.parent_span_id.hex()})
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - the plan-time reachability probe
        self.send_response(405)
        self.end_headers()

    def log_message(self, *args):
        pass


def _value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind)


@pytest.fixture(scope="module")
def collector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces"
    server.shutdown()


@pytest.fixture(scope="module")
def trained(model_cache, tmp_path_factory, collector):
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
            "logging=[comet,phoenix]", f"logging.phoenix_endpoint={collector}",
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
    assert {"outputs", "checkpoints", "comet", "adapter", "checkpoint-4"} <= written, written
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


def test_phoenix_receives_each_evaluation_and_the_generations_as_traces(trained, collector):
    root, _ = trained
    evaluations = [span for span in Collector.spans if span["name"] == "evaluation"]
    eval_losses = [record["eval_loss"] for record in _metrics(root) if "eval_loss" in record]
    assert [span["attributes"]["eval/loss"] for span in evaluations] == eval_losses and len(eval_losses) == 2
    span = evaluations[0]
    assert span["resource"]["openinference.project.name"] == "handoff-tests"
    assert span["attributes"]["peftstudio.run_name"] == "tiny-handoff"
    assert span["attributes"]["peftstudio.tags"] == ["tiny", "ci"]
    # eval.metrics: each evaluation's generations, as written to RUN_DIR/eval/step-N.jsonl
    tables = [json.loads(line) for step in (2, 4)
              for line in (root / f"outputs/eval/step-{step}.jsonl").read_text().splitlines()]
    generations = [s for s in Collector.spans if s["name"] == "generation"]
    assert [(g["attributes"]["input.value"], g["attributes"]["output.value"], g["attributes"]["eval.exact_match"])
            for g in generations] == [(r["prompt"], r["prediction"], r["scores"]["exact_match"]) for r in tables]
    parent = next(s for s in Collector.spans if s["name"] == "evaluation generations")
    assert all(g["parent"] for g in generations) and parent["attributes"]["peftstudio.samples"] == 2


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
