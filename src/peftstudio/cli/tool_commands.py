"""Commands that bridge to other tools and services: import and convert configs, accelerate
configs, sweeps, cloud launch, the studio."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from peftstudio.cli.app import CONFIG, INJECT_FAULT, OVERRIDES, app, console, errors


@app.command(name="import")
def import_(file: Path = typer.Argument(..., help="an Axolotl, LLaMA-Factory, TRL/alignment-handbook or torchtune YAML, "
                                             "an HF TrainingArguments/SFTConfig JSON or a wizard JSON"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the YAML here instead of stdout"),
            dataset_info: Optional[Path] = typer.Option(None, "--dataset-info",
                                                        help="LLaMA-Factory's dataset_info.json naming the datasets"),
            allow_changes: bool = typer.Option(False, "--allow-changes",
                                               help="import even where the run would differ; each change is a "
                                                    "comment in the YAML")) -> None:
    """Convert a foreign config into a peftstudio YAML. Every key is mapped, approximated,
    ignored (it changes nothing) or refused (the run would differ: exit 2 naming the keys,
    unless --allow-changes). The table is printed."""
    from peftstudio import api
    from peftstudio.config.importers import ImportRefused

    try:
        result = api.import_config(file, dataset_info, allow_changes)
    except ImportRefused as refused:
        _print_import_table(refused.result)
        raise
    if out is None:
        print(result.yaml_text, end="")
    else:
        from peftstudio.files import write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, result.yaml_text)
        console.print(f"[green]wrote[/] {out}  (train with: peftstudio train --config {out})")
    _print_import_table(result)


def _print_import_table(result) -> None:
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts().items())
    errors.print(f"imported {result.kind}: {counts}", markup=False)
    for row in result.report():
        errors.print(f"  {row}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def convert(source: Path = typer.Argument(..., help="a run dir (its config.resolved.yaml) or a peftstudio config file"),
            to: str = typer.Option(..., "--to", help="axolotl, trl or llamafactory"),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="write here instead of stdout")) -> None:
    """Write a peftstudio config in another tool's format; `peftstudio import` of the result
    gives back the same config. (`export` hands off trained models; this converts configs.)"""
    from peftstudio import api

    converted = api.convert_config(source, to)
    if converted.sidecars and out is None:
        from peftstudio.errors import Problem, UserError

        raise UserError(Problem("--out", f"{to} also needs {', '.join(converted.sidecars)} beside the config",
                                f"pass --out DIR/{to}.yaml"))
    if out is None:
        print(converted.text, end="")
    else:
        from peftstudio.files import write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, converted.text)
        for name, text in converted.sidecars.items():
            write_text(out.parent / name, text)
        console.print(f"[green]wrote[/] {out}{''.join(f' and {out.parent / n}' for n in converted.sidecars)} ({converted.tool})")
    for note in converted.notes:
        errors.print(f"  note: {note}", markup=False, highlight=False, soft_wrap=True)


@app.command("accelerate-config")
def accelerate_config(
    name: str = typer.Argument(..., help="single_gpu, multi_gpu, fsdp, deepspeed_zero2, deepspeed_zero3 "
                                         "(CPU offload of optimizer and parameters) or cpu"),
    out: Path = typer.Option(..., "--out", "-o", help="the YAML file to write"),
    num_processes: Optional[int] = typer.Option(None, help="processes in total; default: 1 for single_gpu and "
                                                           "cpu, else this machine's GPUs (at least 2) × machines"),
    num_machines: int = typer.Option(1, help="machines taking part"),
    machine_rank: int = typer.Option(0, help="this machine's index"),
    main_process_ip: Optional[str] = typer.Option(None, help="address of machine 0 (several machines)"),
    main_process_port: Optional[int] = typer.Option(None, help="rendezvous port on machine 0"),
    mixed_precision: Optional[str] = typer.Option(None, help="no, bf16 or fp16; default bf16 on GPUs, no on cpu"),
    gradient_accumulation_steps: int = typer.Option(1, help="DeepSpeed wants it in its config"),
) -> None:
    """Write a config file for `accelerate launch --config_file F.yaml`."""
    from peftstudio import api

    written = api.write_accelerate_config(name, out, num_processes, num_machines, machine_rank, main_process_ip,
                                          main_process_port, mixed_precision, gradient_accumulation_steps)
    console.print(f"wrote {written.path}\nuse it: accelerate launch --config_file {written.path} -m peftstudio train "
                  f"{' '.join(written.train_overrides)} OVERRIDES", soft_wrap=True)


@app.command()
def sweep(sweep_file: Path = typer.Argument(..., help="a sweep YAML: method, metric, parameters, base, pruner"),
          trials: Optional[int] = typer.Option(None, "--trials", "-n", min=1,
                                               help="finished trials the study should hold (grid: all by default)"),
          study_dir: Optional[Path] = typer.Option(None, "--study-dir",
                                                   help="where study.db, trials/, best.yaml go (default sweeps/NAME)"),
          inject_fault: Optional[str] = INJECT_FAULT) -> None:
    """Hyperparameter search with Optuna (bayes = TPE, random, grid); each trial is a normal train
    run in its own dir, pruned on eval loss; rerun the same command to continue the study.

    Sweep file: `method: bayes|random|grid`, `metric: {name: eval/loss, goal: minimize}`,
    `parameters: {KEY: {values: [...]} or {distribution: uniform|log_uniform_values|int_uniform,
    min: A, max: B}}`, `base: {KEY: VALUE}` for every trial, optional `pruner: {type: median|none,
    n_startup_trials: 2, n_warmup_steps: 0}` and `seed`."""
    from peftstudio.api import quiet_libraries
    from peftstudio.sweep.results import print_results
    from peftstudio.sweep.study import run_sweep
    from peftstudio.train.faults import Faults

    def show(trial) -> None:
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        result = f"{trial.value:.4f}" if trial.value is not None else trial.state.lower()
        console.print(f"trial {trial.number}  {params}  → {result}  ({trial.seconds:.1f} s) {trial.note}", markup=False)

    quiet_libraries(interactive=False)
    print_results(console, run_sweep(sweep_file, trials, study_dir, console, on_trial=show,
                                     faults=Faults.parse(inject_fault)))


class Provider(str, Enum):
    runpod = "runpod"
    lambda_ = "lambda"
    vast = "vast"
    local = "local"


@app.command()
def launch(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
           provider: Provider = typer.Option(..., "--provider", help="runpod, lambda, vast, or local (sky local up)"),
           gpu: Optional[str] = typer.Option(None, "--gpu", help="NAME:1, e.g. H100:1; default: the cheapest that fits"),
           spot: bool = typer.Option(False, "--spot", help="spot/interruptible instances (needs --bucket)"),
           bucket: Optional[str] = typer.Option(None, "--bucket", help="s3://, gs:// or r2:// URL for checkpoints"),
           out: Path = typer.Option(Path("sky-task.yaml"), "--out", help="where to write the SkyPilot task"),
           price_file: Optional[Path] = typer.Option(None, "--price-file", help="GPU prices instead of the shipped file"),
           num_nodes: int = typer.Option(1, "--num-nodes", help="machines (one GPU each) training together; "
                                         "more than 1 needs --bucket")) -> None:
    """Write a SkyPilot task for this run (resources, setup installing peftstudio, run with
    resume=auto, file mounts for config, data and checkpoints) and print the `sky` command."""
    from peftstudio import api
    from peftstudio.launch.skypilot import describe_option

    result = api.launch(overrides or [], config, provider.value, gpu, spot, bucket, out, price_file, num_nodes)
    console.print(f"[bold]task[/]      {result.task_path}  (runs {result.config_path})")
    console.print(f"[bold]gpu[/]       {result.accelerator or 'none (CPU)'}" +
                  (f": {describe_option(result.option)}" if result.option else ""), markup=True)
    for note in result.notes:
        console.print(f"[dim]note      {note}[/]")
    console.print(f"[bold]start[/]     {result.command}", markup=True)


@app.command()
def studio(host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback needs --token"),
           port: int = typer.Option(7860, help="port to listen on"),
           data_dir: Path = typer.Option(Path("./studio-data"), "--data-dir",
                                         help="where jobs (SQLite), uploads and runs are kept"),
           token: Optional[str] = typer.Option(None, "--token", envvar="PEFTSTUDIO_STUDIO_TOKEN",
                                               help="required on every page and API call when set: at least 16 "
                                                    "characters, or `generate` for a random one printed once"),
           max_upload_mb: int = typer.Option(200, min=1, help="largest dataset upload, in MiB"),
           max_running: int = typer.Option(1, min=1, help="jobs run at once per device; the rest queue")) -> None:
    """Web wizard and job monitor (FastAPI) calling the same API as the CLI."""
    from peftstudio.studio.launch import start_studio

    start_studio(host, port, data_dir, token, max_upload_mb, max_running)
