"""Commands that take a run's config (OVERRIDES and --config): plan it, train it, check it, size it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from peftstudio.cli.app import CONFIG, INJECT_FAULT, OVERRIDES, app, console, errors, show_result
from peftstudio.errors import EXIT_ENVIRONMENT, EXIT_USER_ERROR


@app.command()
def plan(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
         as_json: bool = typer.Option(False, "--json", help="print the plan as one JSON object"),
         price_file: Optional[Path] = typer.Option(None, "--price-file",
                                                   help="GPU prices to use instead of the shipped providers.yaml"),
         out: Optional[Path] = typer.Option(None, "--out", "-o", help="save the plan (versioned JSON) for "
                                                                      "`peftstudio train --plan FILE`")) -> None:
    """Dry run: the resolved config with each value's origin, hardware, data, schedule, memory,
    time and cost (here and on rented GPUs that fit), warnings. Loads no weights, downloads nothing."""
    from peftstudio import api

    run_plan = api.plan(overrides or [], config)
    if out is not None:
        run_plan.write(out)
        errors.print(f"plan saved to {out} (run it with: peftstudio train --plan {out})", markup=False)
    cost = api.cost(run_plan, price_file)
    if as_json:
        print(json.dumps({**run_plan.to_dict(), "cost": cost.to_dict() if cost else None}, indent=2))
        return
    from peftstudio.report import print_cost, print_plan

    print_plan(console, run_plan)
    if cost is not None:
        print_cost(console, cost)


@app.command()
def train(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
          plan_file: Optional[Path] = typer.Option(None, "--plan", help="execute this saved plan (peftstudio plan "
                                                   "--out FILE) exactly; checked against this machine and the data"),
          inject_fault: Optional[str] = INJECT_FAULT,
          memory_budget: Optional[str] = typer.Option(None, "--memory-budget", hidden=True)) -> None:
    """Compose → validate → resolve → train, or execute a saved plan. Resumes from the newest
    complete checkpoint of the same run unless training.resume=never. With no arguments: the
    embedded tiny model on the bundled sample data, on CPU, in about a minute."""
    from peftstudio import api
    from peftstudio.report import print_plan_summary
    from peftstudio.train.faults import Faults
    from peftstudio.units import parse_bytes

    result = api.train(overrides or [], config, console, on_plan=lambda p: print_plan_summary(console, p),
                       plan_file=plan_file, faults=Faults.parse(inject_fault),
                       memory_budget=parse_bytes(memory_budget, "--memory-budget") if memory_budget is not None else None)
    if not result.report:
        return
    run_dir = result.run_dir
    if result.first_loss is not None:
        losses = f"{result.first_loss:.4f} → {result.last_loss:.4f}" if result.first_loss != result.last_loss \
            else f"{result.last_loss:.4f}"
        console.print(f"[bold green]done[/] at step {result.final_step}: loss {losses}"
                      + (" (stopped early)" if result.stopped_early else ""))
    console.print(f"adapter    {run_dir.adapter}\nloss plot  {run_dir.loss_plot}\nmetrics    {run_dir.metrics}")
    console.print(f"try it:    peftstudio generate {run_dir.root}")


@app.command()
def validate(files: list[Path] = typer.Argument(..., help="config files (YAML or JSON)")) -> None:
    """Validate config files; reports every problem of every file, exit 2 if any."""
    from peftstudio import api

    failed = False
    for path, problems in api.validate_files(files).items():
        if problems:
            failed = True
            errors.print(f"[red]✗ {path}[/]: {len(problems)} problem(s)")
            for problem in problems:
                errors.print("  " + problem.render().replace("\n", "\n  "), markup=False, highlight=False)
        else:
            console.print(f"[green]✓ {path}[/]")
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


@app.command()
def explain(key: str = typer.Argument(..., help="a dotted key (training.micro_batch_size), a section or group "
                                               "(training, peft, platform), or an option (peft=dora)")) -> None:
    """Type, range, default, guidance and memory impact of a parameter, from the schema itself."""
    from peftstudio import api
    from peftstudio.report import print_explanation

    print_explanation(console, api.explain(key))


@app.command("preview-data")
def preview_data(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
                 rows: int = typer.Option(3, "--rows", "-n", min=1, help="how many training samples to show"),
                 as_json: bool = typer.Option(False, "--json", help="per sample: token ids, text and trained spans")) -> None:
    """Show samples as training sees them: the rendered chat with the trained spans marked."""
    from peftstudio import api
    from peftstudio.report import print_data_preview

    preview = api.preview_data(overrides, config, rows)
    if as_json:
        typer.echo(json.dumps(preview, indent=2))
    else:
        print_data_preview(console, preview)


@app.command()
def detect(as_json: bool = typer.Option(False, "--json", help="print the profile as one JSON object"),
           output_dir: Path = typer.Option(Path("."), "--output-dir", help="where free disk space is measured")) -> None:
    """Hardware report: accelerator, memory, bf16 and flash-attention support, CPU, RAM, disk;
    and the recommended platform preset, precision, attention and accelerate config."""
    from peftstudio import api

    show_result(api.detect(output_dir), as_json, "peftstudio.report:print_detection")


def _parse_batch_sizes(text: str) -> list[int]:
    """`--batch-sizes` as a list. An option callback, so click reports a bad value as a usage
    error (usage line, exit 2) before the command runs."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        raise typer.BadParameter(f"{text!r} is not a list of positive integers; write e.g. --batch-sizes 1,2,4,8")
    return sizes


@app.command()
def estimate(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
             batch_sizes: str = typer.Option("1,2,4,8", "--batch-sizes", callback=_parse_batch_sizes,
                                              help="micro-batch sizes, comma-separated"),
             as_json: bool = typer.Option(False, "--json", help="print the estimates as one JSON object"),
             device_memory: Optional[str] = typer.Option(None, "--device-memory", help="compare with a device of this "
                                                         "size (e.g. 24GiB) instead of this machine's")) -> None:
    """Predicted peak training memory per micro-batch size, by component, from the model's
    architecture numbers alone (no download, no weights)."""
    from peftstudio import api
    from peftstudio.units import parse_bytes

    device_bytes = parse_bytes(device_memory, "--device-memory") if device_memory is not None else None
    result = api.estimate(overrides or [], config, batch_sizes, device_bytes=device_bytes)
    show_result(result, as_json, "peftstudio.report:print_estimates")


@app.command("find-batch-size")
def find_batch_size(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
                    max_size: Optional[int] = typer.Option(None, "--max", min=1, help="largest micro-batch to try"),
                    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the result and every probe as JSON"),
                    memory_budget: Optional[str] = typer.Option(
                        None, "--memory-budget", help="treat a measured peak above this (e.g. 2GiB) as out of memory; "
                                                      "default: the GPU's own limit, or 90% of available RAM")) -> None:
    """Probe the device with real training steps on the longest sequence the data produces:
    the largest micro-batch that fits, with gradient_accumulation_steps keeping the effective batch."""
    from peftstudio import api
    from peftstudio.units import format_gib, parse_bytes

    budget = parse_bytes(memory_budget, "--memory-budget") if memory_budget is not None else None

    def show(probe) -> None:
        peak = f"peak {format_gib(probe.peak_bytes, 3)}" if probe.peak_bytes is not None else "peak n/a"
        verdict = "[green]ok[/]" if probe.fits else "[red]out of memory[/]"
        console.print(f"probe micro-batch {probe.micro_batch_size:>4}: {verdict}, {peak}, {probe.seconds:.2f} s")

    result = api.find_batch_size(overrides or [], config, max_size, budget, output, on_probe=show)
    console.print(f"[bold]micro_batch_size={result.micro_batch_size} gradient_accumulation_steps="
                  f"{result.gradient_accumulation_steps}[/] (effective batch {result.effective_batch}, sequence "
                  f"{result.seq_len}; {len(result.probes)} probes seeded at {result.seed}: {result.seed_reason}; "
                  f"limited by {result.limited_by}; budget: {result.budget_source})")
    if result.sample:
        console.print(f"probed on {result.sample}")
    if output is not None:
        console.print(f"written to {output}")


@app.command()
def doctor(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
           as_json: bool = typer.Option(False, "--json", help="print the checks as one JSON object")) -> None:
    """Check the environment for this run: Python and package versions (and whether they work
    together), accelerator and driver, HF_TOKEN / WANDB_API_KEY present (never printed), the
    dataset, writable output and checkpoint dirs, free disk vs. checkpoints, hyperparameters.
    Exit 3 if any check fails."""
    from peftstudio import api

    report = api.doctor(overrides or [], config)
    show_result(report, as_json, "peftstudio.doctor.report:print_doctor")
    if report.failed:
        raise typer.Exit(EXIT_ENVIRONMENT)
