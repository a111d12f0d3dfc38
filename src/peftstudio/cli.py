"""peftstudio's command line: parse → call api → print. Nothing else lives here."""

from __future__ import annotations

import importlib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from peftstudio.errors import EXIT_ENVIRONMENT, EXIT_OK, EXIT_RUN_FAILED, EXIT_USER_ERROR, Interrupted, PeftStudioError
from peftstudio.redact import scrub
from peftstudio.settings import quiet_tokenizer_threads

app = typer.Typer(
    help="Configure, check and run LoRA / QLoRA / DoRA / QDoRA / rsLoRA / PiSSA / OLoRA fine-tuning. "
         "OVERRIDES use Hydra's grammar: key.sub=value, group=option, +experiment=NAME, ~key.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: long messages stay one line each, so they can be grepped and copied.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

OVERRIDES = typer.Argument(None, help="key.sub=value, group=option, +experiment=NAME, ~key", show_default=False)
CONFIG = typer.Option(None, "--config", "-c", help="a YAML or JSON config file, applied before OVERRIDES")
# For tests that must kill or break a real run in a subprocess: KIND=STEP[,KIND=STEP], see train/faults.py.
INJECT_FAULT = typer.Option(None, "--inject-fault", hidden=True)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors"),
          env_file: Optional[Path] = typer.Option(None, "--env-file", help="read variables from this file instead "
                                                  "of ./.env (the shell's own values still win)"),
          no_env_file: bool = typer.Option(False, "--no-env-file", help="read no .env file at all")) -> None:
    _state["debug"] = debug
    from peftstudio import redact, settings
    from peftstudio.errors import Problem, UserError

    if no_env_file:
        if env_file is not None:
            raise UserError(Problem("--env-file", "given together with --no-env-file", "pass one of the two"))
        settings.skip_dotenv()
        return
    if env_file is not None and not env_file.expanduser().is_file():
        raise UserError(Problem("--env-file", f"{env_file} is not a file",
                                "pass the path of a KEY=value file, or drop --env-file to read ./.env"))
    loaded = settings.load_dotenv(file=env_file.expanduser() if env_file is not None else None)
    for name, value in loaded.items():  # tokens and keys, never written anywhere
        if redact.is_secret_name(name) or name.endswith("_TOKEN"):
            redact.remember_secret(value)


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


@app.command()
def generate(run_dir: Path = typer.Argument(..., help="a finished run's output dir, e.g. ./outputs"),
             prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p", help="a prompt (repeatable)"),
             count: int = typer.Option(5, help="validation samples to try when no --prompt is given"),
             max_new_tokens: int = typer.Option(48, help="tokens to generate per prompt"),
             temperature: float = typer.Option(0.0, help="0 = greedy (default); above 0 samples"),
             top_p: float = typer.Option(1.0, help="nucleus sampling mass (with --temperature > 0)"),
             seed: int = typer.Option(0, help="sampling seed: the same seed gives the same text"),
             image: Optional[list[Path]] = typer.Option(None, "--image", help="an image for the prompts (repeatable; "
                                                        "image-text runs)")) -> None:
    """Try the trained adapter (chat template applied), next to the base model without it."""
    from peftstudio import api

    for item in api.generate(run_dir, prompt, count, max_new_tokens, temperature, top_p, seed, image):
        console.print(f"[bold]prompt[/]   {item.prompt!r}")
        if item.expected is not None:
            console.print(f"expected  {item.expected!r}")
        console.print(f"[dim]base      {item.base!r}[/]")
        console.print(f"[green]adapter[/]   {item.adapter!r}\n")


@app.command()
def evaluate(run_dir: Path = typer.Argument(..., help="a finished run's output dir, e.g. ./outputs"),
             data: Optional[Path] = typer.Option(None, "--data", help="a dataset file in the run's data format; "
                                                 "default: the run's validation split"),
             metrics: Optional[str] = typer.Option(None, "--metrics", help="comma-separated metric names "
                                                   "(exact_match,json_field_accuracy,rouge_l,bleu,chrf,...); "
                                                   "default: the run's eval.metrics"),
             compare_base: bool = typer.Option(False, "--compare-base", help="also score the base model (adapter off)"),
             limit: Optional[int] = typer.Option(None, min=1, help="evaluate only the first N rows"),
             max_new_tokens: Optional[int] = typer.Option(None, min=1, help="default: the run's eval.max_new_tokens"),
             lm_eval: Optional[str] = typer.Option(None, "--lm-eval", help="comma-separated lm-evaluation-harness tasks"),
             lm_eval_include: Optional[Path] = typer.Option(None, "--lm-eval-include", help="a folder of local "
                                                            "lm-eval task YAML files"),
             lm_eval_limit: Optional[int] = typer.Option(None, min=1, help="lm-eval: at most N documents per task"),
             as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object")) -> None:
    """Score a finished run's generated answers with the eval metrics, adapter vs base side by side."""
    from peftstudio import api
    from peftstudio.report import print_evaluation

    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    tasks = [t.strip() for t in lm_eval.split(",") if t.strip()] if lm_eval else None
    result = api.evaluate(run_dir, data, names, compare_base, limit, max_new_tokens, tasks, lm_eval_include,
                          lm_eval_limit)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_evaluation(console, result)


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
def merge(run_dir: Path = typer.Argument(..., help="a finished run's output dir, e.g. ./outputs"),
          out: Path = typer.Option(..., "--out", "-o", help="directory for the merged model"),
          dtype: str = typer.Option("fp32", help="weights dtype of the merged model: fp32, bf16 or fp16"),
          overwrite: bool = typer.Option(False, help="replace --out if it holds files")) -> None:
    """Merge the adapter into the full-precision base (QLoRA: base loaded unquantized) and save
    safetensors + tokenizer that AutoModelForCausalLM.from_pretrained loads."""
    from peftstudio import api

    result = api.merge(run_dir, out, dtype, overwrite)
    console.print(f"[bold green]merged[/] {result.method} adapter into {result.base} ({result.dtype})")
    console.print(f"model      {result.out}  ({', '.join(result.files)})")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a finished run's output dir, e.g. ./outputs"),
           fmt: str = typer.Option(..., "--format", "-f", help="merged (transformers safetensors), gguf (llama.cpp / "
                                                              "Ollama, with a Modelfile) or vllm (adapter + serve command)"),
           out: Path = typer.Option(..., "--out", "-o", help="directory to write"),
           quantize: Optional[str] = typer.Option(None, "--quantize", help="GGUF weights: f16 (default; same greedy "
                                                  "tokens as transformers), q8_0 or q4_k_m"),
           overwrite: bool = typer.Option(False, help="replace --out if it holds files"),
           as_json: bool = typer.Option(False, "--json", help="print what was written and checked as JSON")) -> None:
    """Write a hand-off of a finished run and check it before saying done: merged is reloaded
    and its logits compared with base + adapter; gguf is read back and run in llama.cpp
    (llama-cpp-python) against transformers' greedy tokens; vllm is read back as vLLM's LoRA
    loader reads it. Nothing appears at --out unless the check passed."""
    from peftstudio import api

    result = api.export(run_dir, fmt, out, quantize, overwrite)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"[bold green]exported[/] {result.format} to {result.out}  ({', '.join(result.files)})")
    for line in result.checks:
        console.print(f"checked    {line}", markup=False, highlight=False)
    if result.command:
        console.print(f"use it     {result.command}", markup=False, highlight=False)


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


@app.command()
def detect(as_json: bool = typer.Option(False, "--json", help="print the profile as one JSON object"),
           output_dir: Path = typer.Option(Path("."), "--output-dir", help="where free disk space is measured")) -> None:
    """Hardware report: accelerator, memory, bf16 and flash-attention support, CPU, RAM, disk;
    and the recommended platform preset, precision, attention and accelerate config."""
    from peftstudio import api

    _show(api.detect(output_dir), as_json, "peftstudio.report:print_detection")


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
    _show(result, as_json, "peftstudio.report:print_estimates")


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


def _show(result, as_json: bool, printer: str) -> None:
    """Print a result as one JSON object, or with its rich printer ("module:function", imported
    only when used so `--json` stays light)."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    module, function = printer.split(":")
    getattr(importlib.import_module(module), function)(console, result)


@app.command()
def doctor(overrides: Optional[list[str]] = OVERRIDES, config: Optional[Path] = CONFIG,
           as_json: bool = typer.Option(False, "--json", help="print the checks as one JSON object")) -> None:
    """Check the environment for this run: Python and package versions (and whether they work
    together), accelerator and driver, HF_TOKEN / WANDB_API_KEY present (never printed), the
    dataset, writable output and checkpoint dirs, free disk vs. checkpoints, hyperparameters.
    Exit 3 if any check fails."""
    from peftstudio import api

    report = api.doctor(overrides or [], config)
    _show(report, as_json, "peftstudio.doctor.report:print_doctor")
    if report.failed:
        raise typer.Exit(EXIT_ENVIRONMENT)


@app.command()
def diagnose(run_dir: Path = typer.Argument(..., help="a run's output dir, e.g. ./outputs"),
             as_json: bool = typer.Option(False, "--json", help="print the diagnosis as one JSON object")) -> None:
    """Name what went wrong in a run (out of memory, NaN loss, divergence, no progress, overfitting,
    slow steps) from its metrics, resolved config and log, with the overrides to try."""
    from peftstudio import api

    _show(api.diagnose(run_dir), as_json, "peftstudio.diagnose.report:print_diagnosis")


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


def main() -> None:
    """Console entry point: user errors become one message and exit 2, never a traceback."""
    debug = "--debug" in sys.argv[1:]
    quiet_tokenizer_threads()
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
    except typer.TyperException as error:
        sys.exit(_report_click_error(error))
    except Interrupted as error:
        errors.print("stopped:", style="bold yellow", end=" ")
        errors.print(scrub(error.problems[0].message), markup=False, highlight=False)
        sys.exit(error.exit_code)
    except PeftStudioError as error:
        if debug:
            raise
        errors.print("error:", style="bold red", end=" ")
        errors.print(scrub(error.render()), markup=False, highlight=False)
        sys.exit(error.exit_code)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        errors.print("interrupted")
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - a run failure, reported as exit 1
        if debug:
            raise
        errors.print("run failed:", style="bold red", end=" ")
        errors.print(scrub(f"{type(error).__name__}: {error}\n(rerun with --debug for the traceback)"),
                     markup=False, highlight=False)
        sys.exit(EXIT_RUN_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _report_click_error(error: typer.TyperException) -> int:
    """Print a command-line error as click does and return its exit code. A usage error (unknown
    command or option, missing argument, bad value) prints the usage line, the help hint and the
    message with click's did-you-mean, and exits 2.

    typer vendors click, so these are typer's exception classes: the separate click package's
    ClickException never matches them."""
    # For no_args_is_help typer has already printed the rich help; the error's own text is empty.
    if error.format_message():
        show = getattr(error, "show", None)
        if show is not None:
            show()
        else:
            errors.print(f"Error: {error.format_message()}", markup=False, highlight=False)
    return error.exit_code
