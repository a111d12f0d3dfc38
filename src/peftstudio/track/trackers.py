"""Experiment trackers as metric sinks: Weights & Biases and MLflow (Comet and Phoenix have modules
of their own).

Both receive the same records as metrics.jsonl. Each logs the run's resolved settings once, as
hyperparameters, when the run starts fresh; a resumed run reattaches to the same tracker run
(its id is kept in the run dir) and logs only metrics. Secrets never reach a tracker: the
settings are the resolved config, which holds none, and keys that look like credentials are
dropped anyway; W&B's console and environment capture are off.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from peftstudio.redact import is_secret_name, scrub
from peftstudio.settings import (allow_mlflow_file_store, bound_mlflow_requests, mlflow_credentials,
                                 mlflow_tracking_uri, wandb_base_url, wandb_variables)

# How long plan waits for a tracker server to answer, and how long a finished run waits for a
# slow tracker to take its last records before leaving them (metrics.jsonl holds them all).
PROBE_SECONDS = 5.0
CLOSE_SECONDS = 15.0


def loggable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Flattened settings fit for a tracker: no credential-like keys, lists as text."""
    return {key: (value if isinstance(value, (int, float, str, bool)) or value is None else str(value))
            for key, value in settings.items() if not is_secret_name(key)}


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record, named train/... or eval/... as TensorBoard shows them."""
    # eval.metrics arrive already named eval/<metric>.
    return {(name if name.startswith("eval/") else f"eval/{name.removeprefix('eval_')}" if name.startswith("eval_")
             else f"train/{name}"): float(value)
            for name, value in record.items()
            if name not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)}


def wandb_mode(mode_variable: str | None, key_set: bool) -> tuple[str, str]:
    """(mode, reason): WANDB_MODE when set, online with an API key, offline otherwise."""
    if mode_variable:
        return mode_variable, "WANDB_MODE is set"
    if key_set:
        return "online", "WANDB_API_KEY is set"
    return "offline", "no WANDB_API_KEY: logged offline, upload later with `wandb sync`"


class WandbSink:
    """Logs to W&B with its files under RUN_DIR/wandb."""

    def __init__(self, run_dir: Path, project: str, identity: dict[str, Any], settings: dict[str, Any], resumed: bool):
        import wandb

        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else uuid.uuid4().hex[:12]
        mode, reason = wandb_mode(*wandb_variables())
        logging.getLogger("peftstudio").info("W&B %s (%s), files in %s", mode, reason, run_dir / "wandb")
        self._run = wandb.init(
            project=project, name=identity["name"], tags=list(identity["tags"]) or None, notes=identity["notes"],
            id=run_id, resume="allow", dir=str(run_dir), mode=mode,
            config=None if resumed else loggable_settings(settings),
            settings=wandb.Settings(console="off", save_code=False, disable_git=True, silent=True,
                                    x_disable_stats=True, disable_job_creation=True),
        )
        id_file.write_text(run_id)

    def write(self, record: dict[str, Any]) -> None:
        self._run.log(numeric_metrics(record), step=record["step"])

    def write_histograms(self, step: int, histograms: dict[str, dict]) -> None:
        import wandb

        self._run.log({name: wandb.Histogram(np_histogram=(h["counts"], h["edges"])) for name, h in histograms.items()},
                      step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    """Logs to MLflow: a local file store in RUN_DIR/mlruns unless a tracking URI is given."""

    def __init__(self, run_dir: Path, tracking_uri: str | None, experiment: str, identity: dict[str, Any],
                 settings: dict[str, Any], resumed: bool):
        uri = tracking_uri or mlflow_tracking_uri() or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            allow_mlflow_file_store()
        bound_mlflow_requests()
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=uri)
        id_file = run_dir / "mlflow_run_id"
        if resumed and id_file.is_file():
            self._run_id = id_file.read_text().strip()
            self._client.update_run(self._run_id, status="RUNNING")
        else:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
            tags = {tag: "" for tag in identity["tags"]}
            if identity["notes"]:
                tags["mlflow.note.content"] = identity["notes"]  # the run's description in MLflow's UI
            self._run_id = self._client.create_run(experiment_id, run_name=identity["name"], tags=tags).info.run_id
            self._log_params(loggable_settings(settings))
            id_file.write_text(self._run_id)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # the tracking API takes at most 100 params per batch
            self._client.log_batch(self._run_id, params=items[start:start + 100])

    def write(self, record: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name.replace("/", "_"), value, now, record["step"])
                   for name, value in numeric_metrics(record).items() if value == value]  # NaN is not storable
        if metrics:
            self._client.log_batch(self._run_id, metrics=metrics)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


def mlflow_server(tracking_uri: str | None) -> str | None:
    """The http(s) server a run's MLflow logging talks to, or None for a local store."""
    uri = tracking_uri or mlflow_tracking_uri()
    return uri if uri and urlsplit(uri).scheme in ("http", "https") else None


def check_mlflow_server(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the MLflow server at `uri` cannot take a run (unreachable, refusing the credentials),
    or None when it answers. One API call, `timeout` seconds at most; credentials masked."""
    parts = urlsplit(uri)
    user, password, token = mlflow_credentials()
    user, password = parts.username or user, parts.password or password
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else parts.netloc
    endpoint = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api/2.0/mlflow/experiments/search", "",
                           "")) + "?max_results=1"
    request = urllib.request.Request(endpoint)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    elif user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode())
    return _probe(request, scrub(uri), timeout)


def check_wandb_server(timeout: float = PROBE_SECONDS) -> str | None:
    """Why the W&B server an online run logs to cannot be reached, or None."""
    base = wandb_base_url()
    return _probe(urllib.request.Request(base.rstrip("/") + "/healthz"), scrub(base), timeout, any_answer=True)


def check_phoenix_collector(endpoint: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why the OTLP collector at `endpoint` cannot take traces (nothing listens), or None: any
    HTTP answer will do, since a collector only accepts POSTed spans."""
    return _probe(urllib.request.Request(endpoint), scrub(endpoint), timeout, any_answer=True)


def _probe(request: urllib.request.Request, shown: str, timeout: float, any_answer: bool = False) -> str | None:
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - the user's own tracker URL
            return None
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return f"{shown} refused the credentials (HTTP {error.code})"
        return None if any_answer or error.code < 500 else f"{shown} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        return f"{shown} is unreachable ({scrub(str(reason))}; waited at most {timeout:g} s)"


class GuardedSink:
    """A tracker sink that can neither stop nor stall training: it is built and fed on a
    thread of its own; the first error drops it with one warning (metrics.jsonl keeps every
    record), and a run ends without waiting more than CLOSE_SECONDS for it."""

    def __init__(self, name: str, build: Callable[[], Any], warn: Callable[[str], None], build_here: bool = False):
        """`build_here`: build the sink in this thread (a library that must start on the main
        thread, such as W&B); its failure is dropped with a warning all the same."""
        self.name, self._build, self._warn = name, build, warn
        self._records: queue.Queue = queue.Queue(maxsize=10_000)
        self._failed = False
        self._sink = None
        if build_here:
            try:
                self._sink = build()
            except Exception as error:  # noqa: BLE001 - a tracker never stops the run
                self._fail(f"{type(error).__name__}: {error}")
                return
        self._thread = threading.Thread(target=self._run, name=f"tracker-{name}", daemon=True)
        self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        self._put(record)

    def write_predictions(self, step: int, rows: list[dict[str, Any]]) -> None:
        """An evaluation's generations, for a sink that records them (Phoenix); others skip them."""
        self._put(("write_predictions", step, rows))

    def write_histograms(self, step: int, histograms: dict[str, dict]) -> None:
        """Weight / gradient histograms, for a sink that draws them; others skip them."""
        self._put(("write_histograms", step, histograms))

    def _put(self, item) -> None:
        if self._failed:
            return
        try:
            self._records.put_nowait(item)
        except queue.Full:
            self._fail("it does not keep up with training")

    def close(self) -> None:
        if not hasattr(self, "_thread"):
            return
        if not self._failed:
            self._records.put(None)
        self._thread.join(CLOSE_SECONDS)
        if self._thread.is_alive() and not self._failed:
            self._fail(f"it did not finish within {CLOSE_SECONDS:g} s")

    def _run(self) -> None:
        try:
            sink = self._sink or self._build()
            while (item := self._records.get()) is not None:
                if isinstance(item, dict):
                    sink.write(item)
                elif hasattr(sink, item[0]):
                    getattr(sink, item[0])(*item[1:])
            sink.close()
        except Exception as error:  # noqa: BLE001 - any tracker failure drops the tracker, never the run
            self._fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._warn(scrub(f"{self.name} stopped logging ({reason}); training goes on, every metric is in "
                             "metrics.jsonl"))
