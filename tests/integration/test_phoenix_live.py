"""logging=phoenix against a real Arize Phoenix: `phoenix serve` from its own venv (make test
creates .venv-phoenix; installed here it would add ~70 packages to the project's), on free ports
with its own working dir, then a tiny run with eval.metrics whose evaluations and generations are
read back through Phoenix's REST API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
PHOENIX_PYTHON = os.path.abspath(os.environ.get("PEFTSTUDIO_PHOENIX_PYTHON") or ROOT / ".venv-phoenix/bin/python")
PROJECT, RUN_NAME = "phoenix-live", "tiny-phoenix"
START_SECONDS = 300  # ~20 s on a quiet 2-core machine (~25 s of CPU importing Phoenix); minutes on a loaded one
SPANS = 2 + 2 + 2 * 2  # per evaluation (2): an evaluation span, a generations span, one span per generated row (2)

pytestmark = pytest.mark.skipif(not Path(PHOENIX_PYTHON).is_file(),
                                reason=f"Phoenix not installed at {PHOENIX_PYTHON} (make test creates .venv-phoenix)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the test's own local Phoenix
        return response.read()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """The base URL of a `phoenix serve` that answers /healthz; stopped after the module."""
    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "PHOENIX_WORKING_DIR": str(work),
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port), "PHOENIX_GRPC_PORT": str(_free_port()),
           "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false"}
    with open(work / "phoenix.log", "wb") as log:
        server = subprocess.Popen([PHOENIX_PYTHON, "-m", "phoenix.server.main", "serve"], env=env, cwd=work,
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert server.poll() is None, (work / "phoenix.log").read_text()[-3000:]
            try:
                _get(f"{base}/healthz")
                break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, f"Phoenix not healthy after {START_SECONDS} s"
                time.sleep(0.25)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def traced(phoenix, model_cache, tmp_path_factory):
    """(run dir, spans of the run's project as Phoenix's REST API returns them)."""
    root = tmp_path_factory.mktemp("phoenix-run")
    result = run_cli(
        "train", "training.num_batches=4", "training.eval_interval_steps=2", "training.log_interval_steps=2",
        "data.max_samples=40", f"training.output_dir={root / 'outputs'}", f"training.checkpoint_dir={root / 'ckpt'}",
        "logging=phoenix", f"logging.phoenix_endpoint={phoenix}/v1/traces", f"logging.project={PROJECT}",
        f"logging.run_name={RUN_NAME}", "logging.tags=[tiny,ci]", "eval.metrics=[exact_match,json_valid]",
        "eval.generate_samples=2", "eval.max_new_tokens=6", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Phoenix stopped logging" not in result.stdout + result.stderr
    deadline = time.monotonic() + 30  # the run has flushed its spans; Phoenix files them in the background
    while len(spans := _project_spans(phoenix)) < SPANS:
        assert time.monotonic() < deadline, f"Phoenix holds {len(spans)} of the run's {SPANS} spans"
        time.sleep(0.25)
    return root / "outputs", spans


def _project_spans(phoenix: str) -> list[dict]:
    """The run project's spans so far; none while Phoenix has not yet filed the first one (it
    creates the project then, and answers 404 before)."""
    try:
        return json.loads(_get(f"{phoenix}/v1/projects/{PROJECT}/spans?limit=1000"))["data"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise


def test_phoenix_files_each_evaluation_under_the_run_project(traced):
    run_dir, spans = traced
    evaluations = sorted((s for s in spans if s["name"] == "evaluation"), key=lambda s: s["attributes"]["peftstudio.step"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "eval_loss" in r]
    assert [(s["attributes"]["peftstudio.step"], s["attributes"]["eval/loss"], s["attributes"]["eval/exact_match"],
             s["attributes"]["eval/json_valid"]) for s in evaluations] == \
        [(r["step"], r["eval_loss"], r["eval/exact_match"], r["eval/json_valid"]) for r in evaluated]
    assert len(evaluations) == 2 and {s["span_kind"] for s in evaluations} == {"EVALUATOR"}
    assert all(s["attributes"]["peftstudio.run_name"] == RUN_NAME and s["attributes"]["peftstudio.tags"] == ["tiny", "ci"]
               for s in spans)


def test_phoenix_holds_every_generation_with_its_prompt_prediction_and_scores(traced):
    run_dir, spans = traced
    rows = [(step, json.loads(line)) for step in (2, 4)
            for line in (run_dir / f"eval/step-{step}.jsonl").read_text().splitlines()]
    generations = [s for s in spans if s["name"] == "generation"]
    assert {s["span_kind"] for s in generations} == {"LLM"}
    assert sorted((g["attributes"]["peftstudio.step"], g["attributes"]["input.value"], g["attributes"]["output.value"],
                   g["attributes"]["peftstudio.target"], g["attributes"]["eval.exact_match"],
                   g["attributes"]["eval.json_valid"]) for g in generations) == \
        sorted((step, r["prompt"], r["prediction"], r["target"], r["scores"]["exact_match"], r["scores"]["json_valid"])
               for step, r in rows)
    parents = {s["context"]["span_id"]: s for s in spans if s["name"] == "evaluation generations"}
    assert len(parents) == 2 and all(p["span_kind"] == "CHAIN" and p["attributes"]["peftstudio.samples"] == 2
                                     for p in parents.values())
    assert all(parents[g["parent_id"]]["attributes"]["peftstudio.step"] == g["attributes"]["peftstudio.step"]
               for g in generations)
