"""A run's lock on its directories: exclusive, naming its holder, taken over from the dead."""

import json

import pytest

from peftstudio.errors import UserError
from peftstudio.train.lock import LOCK_FILE, Holder, RunLock, holder_of


def test_a_second_lock_on_the_same_dir_is_refused_naming_the_holder(tmp_path):
    with RunLock({"training.output_dir": tmp_path / "out", "training.checkpoint_dir": tmp_path / "ckpt"}):
        holder = holder_of(tmp_path / "ckpt")
        assert holder is not None and holder.pid > 0
        with pytest.raises(UserError) as caught:
            with RunLock({"training.checkpoint_dir": tmp_path / "ckpt"}):
                pass
        text = caught.value.render()
        assert caught.value.exit_code == 2 and "is in use by another run" in text and f"pid {holder.pid}" in text
    assert holder_of(tmp_path / "ckpt") is None and holder_of(tmp_path / "out") is None, "released at the end"
    assert (tmp_path / "out" / LOCK_FILE).read_text() == "", "a clean end leaves no holder to take over"


def test_the_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    tmp_path.joinpath(LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": 0}))
    reports = []
    with RunLock({"training.output_dir": tmp_path}, report=reports.append):
        assert Holder.read(tmp_path).pid != 999999
    assert len(reports) == 1 and "taking over the lock of pid 999999 on elsewhere" in reports[0]


def test_one_dir_named_twice_is_locked_once(tmp_path):
    with RunLock({"training.output_dir": tmp_path, "training.checkpoint_dir": tmp_path / "." }):
        assert holder_of(tmp_path) is not None
