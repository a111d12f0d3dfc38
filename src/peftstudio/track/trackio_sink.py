"""Trackio as a metric sink, local first: every record (train/*, eval/*, eval/<metric>) goes to
the run's Trackio project in a local SQLite store, RUN_DIR/trackio unless `logging.trackio_dir`
or TRACKIO_DIR names another (`TRACKIO_DIR=DIR trackio show --project P` opens it).

Trackio has no tags or notes: they are kept in the run's config (`peftstudio.tags`,
`peftstudio.notes`), shown beside the settings. Its CPU and GPU monitors stay off (peftstudio
logs memory itself). Trackio labels a run with the Hugging Face user name when a token is set
(one `whoami` call to the hub, none with HF_HUB_OFFLINE=1). TRACKIO_SPACE_ID or
TRACKIO_SERVER_URL, which trackio reads itself, send the run there instead; `plan` says so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from pathlib import Path
from typing import Any

from peftstudio.settings import trackio_dir_variable, trackio_remote_variable
from peftstudio.track.trackers import loggable_settings, numeric_metrics

log = logging.getLogger("peftstudio")


def trackio_store(configured: str | None, run_root: Path) -> tuple[Path, str]:
    """(directory, why): the local store a run with `logging.trackio_dir=configured` writes."""
    if configured:
        return Path(configured).expanduser().absolute(), "named by logging.trackio_dir"
    if variable := trackio_dir_variable():
        return Path(variable).expanduser().absolute(), "named by TRACKIO_DIR"
    return (run_root / "trackio").absolute(), "inside the run dir: logging.trackio_dir is null"


def trackio_destination(configured: str | None, run_root: Path, project: str) -> str:
    """Where a run's Trackio records go, as `plan` says it."""
    directory, why = trackio_store(configured, run_root)
    where = f"local store {directory} ({why}); {show_command(directory, project)}"
    remote = trackio_remote_variable()
    return where if remote is None else f"sent where {remote} says (it is set), not to the {where}"


def show_command(directory: Path, project: str) -> str:
    return f"`TRACKIO_DIR={directory} trackio show --project {project}` opens it"


def use_store(directory: Path):
    """trackio, writing to `directory`. Trackio binds its directory into module constants when it
    is first imported (from TRACKIO_DIR, else the Hugging Face home); a process may train several
    runs (a sweep's trials), so each opened sink points those constants at its own directory."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    directory = directory.resolve()
    places = {"TRACKIO_DIR": directory, "MEDIA_DIR": directory / "media", "ARTIFACTS_DIR": directory / "artifacts"}
    for name, module in list(sys.modules.items()):
        if name == "trackio" or name.startswith("trackio."):
            for constant, value in places.items():
                if isinstance(getattr(module, constant, None), Path):
                    setattr(module, constant, value)
    where = SQLiteStorage.get_project_db_path("peftstudio").parent
    if where != directory:  # a trackio that keeps its directory elsewhere than these constants
        raise RuntimeError(f"trackio {trackio.__version__} would write to {where}, not {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    return trackio


@contextlib.contextmanager
def _printed_to_log():
    """Trackio prints its progress (and a `trackio show` line without the store's directory) to
    stdout; the run's log keeps it instead. Only while it opens and closes the run: opening
    happens as training starts, closing while the training thread waits for this sink."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        yield
    for line in printed.getvalue().splitlines():
        log.info("trackio: %s", re.sub(r"\x1b\[[0-9;]*m", "", line))  # without its terminal colours


class TrackioSink:
    def __init__(self, directory: Path, project: str, identity: dict[str, Any], settings: dict[str, Any],
                 resumed: bool):
        self._trackio = trackio = use_store(directory)
        config = {**loggable_settings(settings), "peftstudio.tags": list(identity["tags"])}
        if identity["notes"]:
            config["peftstudio.notes"] = identity["notes"]
        with _printed_to_log():
            # resume="allow" reattaches a resumed run to its Trackio run (found by name) and goes on
            # from its last step; a fresh run is always a new Trackio run, even under a name in use.
            self._run = trackio.init(project=project, name=identity["name"], config=config, embed=False,
                                     resume="allow" if resumed else "never", auto_log_gpu=False, auto_log_cpu=False)
        log.info("Trackio: project %s, run %s, into %s; %s", project, identity["name"], directory,
                 show_command(directory, project))

    def write(self, record: dict[str, Any]) -> None:
        self._run.log(numeric_metrics(record), step=record["step"])

    def close(self) -> None:
        with _printed_to_log():
            # trackio.finish(), not run.finish(): it also forgets the thread's current run (this one,
            # opened by init on this thread), which trackio's exit hook would otherwise finish again.
            self._trackio.finish()
