"""Comet ML as a metric sink: offline into RUN_DIR/comet unless COMET_API_KEY is set.

Comet's automatic logging (code, git, environment, host, GPU, console output, CO2) is all off,
and so is its error reporting to Comet's Sentry (which it does even offline):
the run's settings and metrics are logged explicitly, so nothing from the environment (keys
included) can reach the experiment. A resumed run reattaches to the same experiment key.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from peftstudio.settings import comet_api_key_set, quiet_comet
from peftstudio.track.trackers import loggable_settings, numeric_metrics

# Every automatic collector comet_ml has, off (see the module docstring).
QUIET = dict(log_code=False, log_graph=False, auto_param_logging=False, auto_metric_logging=False, parse_args=False,
             auto_output_logging=False, log_env_details=False, log_git_metadata=False, log_git_patch=False,
             log_env_gpu=False, log_env_host=False, log_env_cpu=False, log_env_network=False, log_env_disk=False,
             display_summary_level=0, auto_log_co2=False)


class CometSink:
    def __init__(self, run_dir: Path, project: str, identity: dict[str, Any], settings: dict[str, Any], resumed: bool):
        quiet_comet()
        import comet_ml

        key_file = run_dir / "comet_experiment_key"
        key = key_file.read_text().strip() if resumed and key_file.is_file() else uuid.uuid4().hex
        online = comet_api_key_set()
        self.directory = run_dir / "comet"
        logging.getLogger("peftstudio").info("Comet %s", "online (COMET_API_KEY is set)" if online
                                             else f"offline into {self.directory} (upload later with `comet upload`)")
        if online:
            self._experiment = comet_ml.Experiment(project_name=project, experiment_key=key, **QUIET)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._experiment = comet_ml.OfflineExperiment(project_name=project, experiment_key=key,
                                                          offline_directory=str(self.directory), **QUIET)
        key_file.write_text(key)
        self._experiment.set_name(identity["name"])
        if identity["tags"]:
            self._experiment.add_tags(list(identity["tags"]))
        if identity["notes"]:
            self._experiment.log_other("notes", identity["notes"])
        if not resumed:
            self._experiment.log_parameters(loggable_settings(settings))

    def write(self, record: dict[str, Any]) -> None:
        self._experiment.log_metrics(numeric_metrics(record), step=record["step"])

    def write_histograms(self, step: int, histograms: dict[str, dict]) -> None:
        from comet_ml import Histogram

        for name, histogram in histograms.items():
            edges = histogram["edges"]
            drawn = Histogram()
            drawn.add([(low + high) / 2 for low, high in zip(edges, edges[1:])], counts=histogram["counts"])
            self._experiment.log_histogram_3d(drawn, name=name, step=step)

    def close(self) -> None:
        self._experiment.end()
