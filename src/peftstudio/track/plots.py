"""The loss curve a person looks at first: RUN_DIR/loss.png."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from peftstudio.files import write_bytes


def plot_loss(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss (and eval loss when present) against optimizer step, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        axis.plot(*zip(*train), label="train loss", color="#1f77b4")
    if evals:
        axis.plot(*zip(*evals), "o-", label="eval loss", color="#d62728")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png")
    plt.close(figure)
    write_bytes(path, image.getvalue())
    return path
