"""A run's exclusive hold on its output and checkpoint directories.

Two runs writing the same directories would resume from each other's checkpoints and overwrite
each other's outputs. A run therefore holds an OS file lock (`flock`) on `.peftstudio.lock` in
each of them for its whole life; the kernel drops it when the process ends, however it ends, so
a lock is never left behind by a killed run. The file also names the holder (pid, host, start
time) so a refused run can say who has the directory, and a run that finds the name of a holder
whose lock is gone says that it takes over from a process that died.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from peftstudio.errors import Problem, UserError

LOCK_FILE = ".peftstudio.lock"
# A studio probing the lock holds it for an instant; a run starting at that very moment retries
# before it calls the directory taken.
_ATTEMPTS, _PAUSE_SECONDS = 5, 0.1


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a run directory."""

    pid: int
    host: str
    started: float

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"

    @classmethod
    def read(cls, directory: Path) -> Holder | None:
        """The holder the lock file names, or None (no file, empty, or unreadable)."""
        try:
            data = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8"))
            return cls(int(data["pid"]), str(data["host"]), float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def holder_of(directory: Path) -> Holder | None:
    """The live run holding `directory`, or None when no process holds its lock."""
    path = Path(directory) / LOCK_FILE
    try:
        handle = path.open("rb")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder.read(directory) or Holder(0, "unknown host", 0.0)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class RunLock:
    """Exclusive locks on a run's directories (`{setting: path}`), as a context manager."""

    def __init__(self, directories: dict[str, Path], report: Callable[[str], None] = lambda message: None):
        unique: dict[Path, str] = {}
        for key, directory in directories.items():
            unique.setdefault(Path(directory).expanduser().resolve(), key)
        self._directories = {key: path for path, key in unique.items()}
        self._report = report
        self._handles: list[IO[str]] = []

    def __enter__(self) -> RunLock:
        try:
            for key, directory in self._directories.items():
                self._handles.append(self._take(key, directory))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _take(self, key: str, directory: Path) -> IO[str]:
        directory.mkdir(parents=True, exist_ok=True)
        handle = (directory / LOCK_FILE).open("a+", encoding="utf-8")
        for attempt in range(_ATTEMPTS):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == _ATTEMPTS - 1:
                    handle.close()
                    holder = Holder.read(directory)
                    raise UserError(Problem(
                        key, f"{directory} is in use by another run ({holder or 'holder unknown'})",
                        f"wait for that run to end{f' or stop it (kill {holder.pid})' if holder else ''}, or give "
                        "this run its own training.output_dir and training.checkpoint_dir")) from None
                time.sleep(_PAUSE_SECONDS)
        previous = Holder.read(directory)
        if previous is not None and previous.pid != os.getpid():
            self._report(f"{directory}: taking over the lock of {previous}, which is no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(asdict(Holder(os.getpid(), socket.gethostname(), time.time()))))
        handle.flush()
        return handle

    def release(self) -> None:
        """Clear the holder's name and drop the locks (a clean end leaves nothing to take over)."""
        for handle in self._handles:
            try:
                handle.seek(0)
                handle.truncate()
                handle.flush()
            finally:
                handle.close()  # closing drops the flock
        self._handles = []
