"""Writing outputs so that a reader never sees half of one.

A file is written to a hidden temporary sibling, flushed to disk, then renamed over the target
(a rename within one directory is atomic); a directory is written in full under a staging name
and then renamed into place. A killed process therefore leaves either the old output or the new
one, never a torn one that looks complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes, private: bool = False) -> None:
    """Replace `path` with `data`; the temporary file is removed if the write fails. `private`:
    readable and writable by the owner only (0600), from the moment it exists."""
    path = Path(path)
    # One temporary name per writer: two processes writing the same file (the ranks of a run
    # both caching a measurement) must not rename each other's half-written temporary away.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, private: bool = False) -> None:
    """Replace `path` with `text` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"), private)


def write_json(path: Path, value: Any, private: bool = False) -> None:
    """Replace `path` with `value` as indented JSON."""
    write_text(path, json.dumps(value, indent=2) + "\n", private)


def replace_dir(staged: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing an older one."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        final.rename(trash)
        staged.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        staged.rename(final)


def fsync_tree(root: Path) -> None:
    """Flush every file under `root`, and `root` itself, to disk."""
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (the names renamed into it) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
