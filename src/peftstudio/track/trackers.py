"""Experiment trackers as metric sinks: Weights & Biases and MLflow.

Both receive the same records as metrics.jsonl. Each logs the run's resolved settings once, as
hyperparameters, when the run starts fresh; a resumed run reattaches to the same tracker run
(its id is kept in the run dir) and logs only metrics. Secrets never reach a tracker: the
settings are the resolved config, which holds none, and keys that look like credentials are
dropped anyway; W&B's console and environment capture are off.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from peftstudio.redact import is_secret_name
from peftstudio.settings import allow_mlflow_file_store, mlflow_tracking_uri, wandb_variables


def loggable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Flattened settings fit for a tracker: no credential-like keys, lists as text."""
    return {key: (value if isinstance(value, (int, float, str, bool)) or value is None else str(value))
            for key, value in settings.items() if not is_secret_name(key)}


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record, named train/... or eval/... as TensorBoard shows them."""
    return {(f"eval/{name.removeprefix('eval_')}" if name.startswith("eval_") else f"train/{name}"): float(value)
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

    def __init__(self, run_dir: Path, project: str, name: str, settings: dict[str, Any], resumed: bool):
        import wandb

        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else uuid.uuid4().hex[:12]
        mode, reason = wandb_mode(*wandb_variables())
        logging.getLogger("peftstudio").info("W&B %s (%s), files in %s", mode, reason, run_dir / "wandb")
        self._run = wandb.init(
            project=project, name=name, id=run_id, resume="allow", dir=str(run_dir), mode=mode,
            config=None if resumed else loggable_settings(settings),
            settings=wandb.Settings(console="off", save_code=False, disable_git=True, silent=True,
                                    x_disable_stats=True, disable_job_creation=True),
        )
        id_file.write_text(run_id)

    def write(self, record: dict[str, Any]) -> None:
        self._run.log(numeric_metrics(record), step=record["step"])

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    """Logs to MLflow: a local file store in RUN_DIR/mlruns unless a tracking URI is given."""

    def __init__(self, run_dir: Path, tracking_uri: str | None, experiment: str, name: str,
                 settings: dict[str, Any], resumed: bool):
        uri = tracking_uri or mlflow_tracking_uri() or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            allow_mlflow_file_store()
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=uri)
        id_file = run_dir / "mlflow_run_id"
        if resumed and id_file.is_file():
            self._run_id = id_file.read_text().strip()
            self._client.update_run(self._run_id, status="RUNNING")
        else:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
            self._run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
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
