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
    return _finish(figure, axis, title, path)


# What each objective's curve shows: GRPO's mean reward per function (and the total), DPO / KTO's
# preference accuracy and margin.
OBJECTIVE_CURVES = ("reward", "rewards/accuracies", "rewards/margins")


def plot_objective(records: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """RUN_DIR/rewards.png for DPO / KTO / GRPO runs (None, nothing written, for SFT)."""
    keys = sorted({k for r in records for k in r
                   if k in OBJECTIVE_CURVES or (k.startswith("rewards/") and k.endswith("/mean"))})
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None and "loss" in r]
        if points:
            axis.plot(*zip(*points), label=key)
    axis.set_xlabel("optimizer step")
    return _finish(figure, axis, title, path)


def _finish(figure, axis, title: str, path: Path) -> Path:
    """Title, grid and legend, then the PNG written atomically to `path`."""
    import matplotlib.pyplot as plt

    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png")
    plt.close(figure)
    write_bytes(path, image.getvalue())
    return path
