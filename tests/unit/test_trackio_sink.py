"""The Trackio sink writes where the run says (its run dir, logging.trackio_dir or TRACKIO_DIR),
also when one process opens several runs, as a sweep's trials do."""

from __future__ import annotations

import json
import sqlite3

from peftstudio.track.trackio_sink import TrackioSink, trackio_destination, trackio_store


def _rows(store):
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as database:
        return ([(name, step, json.loads(metrics)) for name, step, metrics
                 in database.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id")],
                {name: json.loads(config) for name, config in database.execute("SELECT run_name, config FROM configs")})


def test_two_runs_in_one_process_each_write_their_own_store(tmp_path):
    import trackio

    for name in ("first", "second"):
        sink = TrackioSink(tmp_path / name / "trackio", "sweep", {"name": name, "tags": ["t"], "notes": None},
                           {"peft.r": 8, "logging.wandb_api_key": "not-for-trackers"}, resumed=False)
        sink.write({"step": 1, "loss": 2.5, "eval_loss": 3.0, "eval/exact_match": 0.5, "epoch": 0.1})
        sink.close()
    for name in ("first", "second"):
        metrics, configs = _rows(tmp_path / name / "trackio/sweep.db")
        assert metrics == [(name, 1, {"train/loss": 2.5, "eval/loss": 3.0, "eval/exact_match": 0.5})]
        assert configs[name]["peft.r"] == 8 and configs[name]["peftstudio.tags"] == ["t"]
        assert "logging.wandb_api_key" not in configs[name] and "peftstudio.notes" not in configs[name]
    assert [run.name for run in trackio.Api().runs("sweep")] == ["second"], "trackio's own reader, last store"


def test_the_store_is_the_run_dir_unless_the_config_or_trackio_dir_names_one(tmp_path, monkeypatch):
    for name in ("TRACKIO_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    assert trackio_store(None, tmp_path / "run") == (tmp_path / "run/trackio",
                                                     "inside the run dir: logging.trackio_dir is null")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "shared"))
    assert trackio_store(None, tmp_path / "run")[0] == tmp_path / "shared"
    assert trackio_store(str(tmp_path / "named"), tmp_path / "run")[0] == tmp_path / "named"
    said = trackio_destination(None, tmp_path / "run", "proj")
    assert f"local store {tmp_path / 'shared'} (named by TRACKIO_DIR)" in said
    assert f"`TRACKIO_DIR={tmp_path / 'shared'} trackio show --project proj`" in said
    monkeypatch.setenv("TRACKIO_SPACE_ID", "someone/space")
    assert trackio_destination(None, tmp_path / "run", "proj").startswith("sent where TRACKIO_SPACE_ID says")


def test_a_resumed_run_goes_on_in_its_trackio_run_and_a_new_one_starts_another(tmp_path):
    store = tmp_path / "trackio"
    identity = {"name": "lora-1a2b3c4d", "tags": [], "notes": "n"}
    for step, resumed in ((2, False), (4, True), (2, False)):
        sink = TrackioSink(store, "p", identity, {"peft.r": 8}, resumed=resumed)
        sink.write({"step": step, "loss": float(step)})
        sink.close()
    with sqlite3.connect(f"file:{store / 'p.db'}?mode=ro", uri=True) as database:
        runs = database.execute("SELECT run_id, group_concat(step) FROM metrics GROUP BY run_id ORDER BY min(id)").fetchall()
    assert [steps for _, steps in runs] == ["2,4", "2"], "resumed: same Trackio run; fresh: a new one, same name"
