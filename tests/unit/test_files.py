"""Atomic writes: the target holds the old content or the new, never a part, and no temporary
file is left behind."""

import json
import os

import pytest

from peftstudio.files import replace_dir, write_bytes, write_json, write_text


def test_write_text_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text("old", encoding="utf-8")
    write_text(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_write_json_reads_back(tmp_path):
    write_json(tmp_path / "summary.json", {"final_step": 3, "best": None})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"final_step": 3, "best": None}


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n", encoding="utf-8")

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_bytes(target, b"new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "config.yaml", "a: 1\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_replace_dir_swaps_a_whole_directory(tmp_path):
    final, staged = tmp_path / "adapter", tmp_path / ".adapter.tmp"
    final.mkdir()
    (final / "old.bin").write_bytes(b"old")
    staged.mkdir()
    (staged / "new.bin").write_bytes(b"new")
    replace_dir(staged, final)
    assert [p.name for p in final.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Two processes (the ranks of a run caching one measurement) write the same file at once:
    each has its own temporary, so both renames succeed and the file is one whole write."""
    import multiprocessing

    target = tmp_path / "probe.json"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(target, str(n) * 1000)) for n in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert target.read_text() in ("0" * 1000, "1" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["probe.json"], "no temporary left behind"


def _write_many(target, text):
    from peftstudio.files import write_text

    for _ in range(200):
        write_text(target, text)
