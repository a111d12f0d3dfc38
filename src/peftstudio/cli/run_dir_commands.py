"""Commands that take a finished run's directory: try it, score it, hand it on, diagnose it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from peftstudio.cli.app import show_result, app, console


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


@app.command()
def diagnose(run_dir: Path = typer.Argument(..., help="a run's output dir, e.g. ./outputs"),
             as_json: bool = typer.Option(False, "--json", help="print the diagnosis as one JSON object")) -> None:
    """Name what went wrong in a run (out of memory, NaN loss, divergence, no progress, overfitting,
    slow steps) from its metrics, resolved config and log, with the overrides to try."""
    from peftstudio import api

    show_result(api.diagnose(run_dir), as_json, "peftstudio.diagnose.report:print_diagnosis")
