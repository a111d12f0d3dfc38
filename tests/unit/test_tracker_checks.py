"""Trackers checked before a run (unreachable, refused credentials: masked in the message), and
a tracker that fails or stalls during a run never stops or holds it."""

import http.server
import threading
import time

import pytest

from peftstudio.errors import EnvironmentProblem
from peftstudio.plan.pipeline import make_plan
from peftstudio.track import trackers
from peftstudio.track.trackers import GuardedSink, check_mlflow_server
from tests.conftest import CPU


@pytest.fixture
def server():
    """A local HTTP server answering every request with the status in `codes[0]`."""
    codes = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(codes[0])
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://alice:Pw0rd-s3cret@127.0.0.1:{httpd.server_port}", codes
    httpd.shutdown()


def test_a_server_that_answers_passes_and_refused_credentials_are_named_masked(server):
    uri, codes = server
    assert check_mlflow_server(uri) is None
    codes[0] = 401
    reason = check_mlflow_server(uri)
    assert "refused the credentials (HTTP 401)" in reason and "alice:***@" in reason and "Pw0rd-s3cret" not in reason


def test_an_unreachable_tracker_stops_the_plan_with_exit_3_fast_unless_warn():
    overrides = ["logging=mlflow", "logging.mlflow_tracking_uri=http://bob:Pw0rd-s3cret@127.0.0.1:9"]
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as caught:
        make_plan(overrides, hardware=CPU)
    assert time.monotonic() - started < 15
    text = caught.value.render()
    assert caught.value.exit_code == 3 and "unreachable" in text and "logging.on_error=warn" in text
    assert "Pw0rd-s3cret" not in text and "bob:***@127.0.0.1:9" in text
    plan = make_plan(overrides + ["logging.on_error=warn"], hardware=CPU)
    assert any("training goes on without it" in w and "metrics.jsonl" in w for w in plan.warnings)


class Broken:
    def __init__(self, fail_at=None, stall=False):
        self.fail_at, self.stall, self.seen = fail_at, stall, []

    def write(self, record):
        if self.stall:
            time.sleep(3600)
        if record["step"] == self.fail_at:
            raise ConnectionError("server http://u:Pw0rd-s3cret@host went away")
        self.seen.append(record["step"])

    def close(self):
        pass


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning():
    warnings, broken = [], Broken(fail_at=3)
    sink = GuardedSink("MLflow", lambda: broken, warnings.append)
    for step in range(1, 8):
        sink.write({"step": step, "loss": 1.0})
    sink.close()
    assert broken.seen == [1, 2] and len(warnings) == 1
    assert "MLflow stopped logging (ConnectionError" in warnings[0] and "training goes on" in warnings[0]
    assert "Pw0rd-s3cret" not in warnings[0]


def test_a_stalled_tracker_never_holds_the_run(monkeypatch):
    monkeypatch.setattr(trackers, "CLOSE_SECONDS", 0.3)
    warnings = []
    sink = GuardedSink("W&B", lambda: Broken(stall=True), warnings.append)
    started = time.monotonic()
    for step in range(100):
        sink.write({"step": step})
    sink.close()
    assert time.monotonic() - started < 2 and "did not finish within" in warnings[0]


def test_a_tracker_that_cannot_start_is_dropped(monkeypatch):
    warnings = []

    def refuse():
        raise RuntimeError("no server")

    GuardedSink("W&B", refuse, warnings.append, build_here=True).close()
    assert len(warnings) == 1 and "no server" in warnings[0]
