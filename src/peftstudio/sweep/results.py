"""What a sweep leaves behind: best.yaml, results.json, a parallel-coordinates plot, and the
results table printed in the terminal."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from peftstudio.config.overrides import override_text
from peftstudio.config.validate import load_config
from peftstudio.files import write_json, write_text
from peftstudio.redact import scrub, scrub_tree, secrets_known

if TYPE_CHECKING:
    from peftstudio.sweep.study import SweepOutcome, TrialSummary


def write_results(outcome: "SweepOutcome") -> dict[str, Path]:
    """best.yaml (when a trial completed), results.json and parallel_coordinates.png."""
    files = {"results": outcome.study_dir / "results.json"}
    rows = [{"number": t.number, "state": t.state, "params": t.params, "value": t.value, "seconds": t.seconds,
             "note": t.note, "run_dir": t.run_dir} for t in outcome.trials]
    write_json(files["results"], {"metric": outcome.spec.metric.model_dump(), "trials": rows,
                                  "best": outcome.best.number if outcome.best else None})
    if outcome.best is not None:
        files["best"] = outcome.study_dir / "best.yaml"
        write_text(files["best"], best_config_yaml(outcome, outcome.best), private=secrets_known())
    plot = plot_parallel_coordinates(outcome, outcome.study_dir / "parallel_coordinates.png")
    if plot is not None:
        files["plot"] = plot
    return files


def best_config_yaml(outcome: "SweepOutcome", best: "TrialSummary") -> str:
    """The best trial's whole config (base + its parameters), for `train --config best.yaml`.
    Output and checkpoint dirs are the defaults, not the trial's, so training it again does not
    resume the trial's finished checkpoints. Values taken from the environment are written back as
    their `${oc.env:NAME}` text (redact.scrub), so the file holds no secret and still resolves."""
    overrides = outcome.spec.base_overrides() + [override_text(k, v) for k, v in best.params.items()]
    overrides = [o for o in overrides if not o.startswith(("training.output_dir=", "training.checkpoint_dir="))]
    config, _ = load_config(overrides)
    values = config.model_dump(mode="json")
    defaults = type(config.training)()
    values["training"]["output_dir"], values["training"]["checkpoint_dir"] = defaults.output_dir, defaults.checkpoint_dir
    header = (f"# best trial {best.number} of sweep {outcome.study_dir}: {outcome.spec.metric.name} = {best.value:.6g}\n"
              f"# parameters: {', '.join(f'{k}={v}' for k, v in best.params.items())}\n"
              f"# train it: peftstudio train --config {outcome.study_dir / 'best.yaml'}\n")
    return scrub(header) + yaml.safe_dump(scrub_tree(values), sort_keys=False)


def plot_parallel_coordinates(outcome: "SweepOutcome", path: Path) -> Path | None:
    """One vertical axis per parameter plus the metric; one line per completed trial,
    coloured by its metric. Numeric axes are scaled to their range (log for log-uniform)."""
    complete = [t for t in outcome.trials if t.state == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(outcome.spec.parameters)
    columns = [_axis([t.params.get(n) for t in complete], outcome.spec.parameters[n].distribution) for n in names]
    columns.append(_axis([t.value for t in complete], None))
    labels = names + [outcome.spec.metric.name]
    values = [t.value for t in complete]
    low, high = min(values), max(values)
    figure, axes = plt.subplots(figsize=(2.2 * len(labels) + 2, 4.5))
    colormap = plt.get_cmap("viridis_r" if outcome.spec.metric.goal == "minimize" else "viridis")
    for row, trial in enumerate(complete):
        shade = (trial.value - low) / (high - low) if high > low else 0.0
        axes.plot(range(len(labels)), [column[0][row] for column in columns], color=colormap(shade), marker="o",
                  label=f"trial {trial.number}: {trial.value:.4g}")
    for index, (_, ticks) in enumerate(columns):
        axes.axvline(index, color="grey", linewidth=0.8)
        for position, text in ticks:
            axes.text(index + 0.03, position, text, fontsize=7, va="center")
    axes.set_xticks(range(len(labels)), labels, fontsize=8)
    axes.set_yticks([])
    axes.set_title(f"sweep {outcome.study_dir.name}: {len(complete)} completed trials")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _axis(raw: list, distribution: str | None) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in [0, 1] for each value, and tick labels (value text at its position)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        use_log = distribution == "log_uniform_values" and min(raw) > 0
        numbers = [math.log10(v) if use_log else float(v) for v in raw]
        low, high = min(numbers), max(numbers)
        span = high - low or 1.0
        positions = [(n - low) / span if high > low else 0.5 for n in numbers]
        return positions, sorted({(p, f"{v:.3g}") for p, v in zip(positions, raw)})
    categories = sorted({str(v) for v in raw})
    step = 1.0 / max(len(categories) - 1, 1)
    where = {c: i * step if len(categories) > 1 else 0.5 for i, c in enumerate(categories)}
    return [where[str(v)] for v in raw], [(where[c], c) for c in categories]


def print_results(console, outcome: "SweepOutcome") -> None:
    """The rich results table, best first, then where the files are."""
    from rich.table import Table

    metric = outcome.spec.metric
    table = Table(title=f"sweep {outcome.study_dir} ({outcome.spec.method}, {metric.goal} {metric.name})",
                  header_style="bold")
    for column in ["trial", "state", *outcome.spec.parameters, metric.name, "seconds", "note"]:
        table.add_column(column, overflow="fold")
    ordered = sorted(outcome.trials, key=lambda t: (t.value is None, (t.value or 0) * (1 if metric.goal == "minimize" else -1)))
    for trial in ordered:
        style = "bold green" if outcome.best and trial.number == outcome.best.number else None
        table.add_row(str(trial.number), trial.state, *[_cell(trial.params.get(p)) for p in outcome.spec.parameters],
                      f"{trial.value:.4f}" if trial.value is not None else "-",
                      f"{trial.seconds:.1f}" if trial.seconds is not None else "-", trial.note, style=style)
    console.print(table)
    console.print(f"ran {outcome.ran} trial(s) in {outcome.wall_seconds:.1f} s; study: {outcome.study_dir / 'study.db'}")
    for name, path in outcome.files.items():
        console.print(f"{name:<8} {path}")
    if "best" in outcome.files:
        console.print(f"train the best: peftstudio train --config {outcome.files['best']}")


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
