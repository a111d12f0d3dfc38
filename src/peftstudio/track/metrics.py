"""Metric sinks: a small protocol with metrics.jsonl as the sink that is always on.

Every sink receives the same records (plain dicts with a `step`), so what TensorBoard shows
is what the JSONL file holds, and tests read the JSONL back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

from peftstudio.files import write_text


class MetricsSink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per line and flushes it, so a killed run loses at most a line."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, allow_nan=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TensorBoardSink:
    """Scalars under train/ and eval/; `purge_step` drops events a killed run wrote past its checkpoint."""

    def __init__(self, log_dir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for name, value in record.items():
            if name in ("step", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            # eval.metrics arrive already named eval/<metric>.
            tag = name if name.startswith("eval/") else f"eval/{name.removeprefix('eval_')}" if name.startswith(
                "eval_") else f"train/{name}"
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def write_histograms(self, step: int, histograms: dict[str, dict]) -> None:
        import numpy as np

        for name, h in histograms.items():
            self._writer.add_histogram_raw(name, h["min"], h["max"], h["num"], h["sum"], h["sum_squares"],
                                           np.array(h["edges"][1:]), np.array(h["counts"]), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (the run was killed mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records up to `last_step`: a resumed run rewrites what came after its checkpoint."""
    kept = [r for r in read_metrics(path) if r.get("step", math.inf) <= last_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
