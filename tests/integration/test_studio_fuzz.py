"""A fuzz pass over the studio's OpenAPI schema (schemathesis): every operation, inputs
generated from the schema, and not one answer may be a server error."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, settings  # noqa: E402

from peftstudio.studio.context import StudioSettings  # noqa: E402
from peftstudio.studio.server import create_app  # noqa: E402
from tests.conftest import CPU  # noqa: E402

EXAMPLES_PER_OPERATION = 5
STATUSES: dict[str, dict[int, int]] = {}
_DATA_DIR = Path(tempfile.mkdtemp(prefix="peftstudio-fuzz-"))
# Jobs the fuzzer creates start a no-op instead of training (they end as interrupted).
app = create_app(StudioSettings(data_dir=_DATA_DIR, max_upload_bytes=64 * 1024),
                 runner_command=lambda job_dir: ["true"], run_queue=False)
app.state.studio._hardware = CPU
schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def job_queue():
    runner = app.state.studio.runner
    runner.poll_seconds = 0.05
    runner.start()  # settles the fuzzer's jobs, so event streams end
    yield
    runner.stop()
    shutil.rmtree(_DATA_DIR, ignore_errors=True)
    total = sum(sum(counts.values()) for counts in STATUSES.values())
    print(f"\nAPI fuzz: {total} requests over {len(STATUSES)} operations; status counts: {STATUSES}")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case, model_cache):
    response = case.call()
    counts = STATUSES.setdefault(f"{case.method} {case.path}", {})
    counts[response.status_code] = counts.get(response.status_code, 0) + 1
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
