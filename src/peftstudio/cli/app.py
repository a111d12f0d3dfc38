"""The Typer app, its consoles and the options every command shares, and the global options
(--debug, --env-file, --no-env-file) that run before any command."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

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

OVERRIDES = typer.Argument(None, help="key.sub=value, group=option, +experiment=NAME, ~key", show_default=False)
CONFIG = typer.Option(None, "--config", "-c", help="a YAML or JSON config file, applied before OVERRIDES")
# For tests that must kill or break a real run in a subprocess: KIND=STEP[,KIND=STEP], see train/faults.py.
INJECT_FAULT = typer.Option(None, "--inject-fault", hidden=True)


def show_result(result, as_json: bool, printer: str) -> None:
    """Print a result as one JSON object, or with its rich printer ("module:function", imported
    only when used so `--json` stays light)."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    module, function = printer.split(":")
    getattr(importlib.import_module(module), function)(console, result)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors"),
          env_file: Optional[Path] = typer.Option(None, "--env-file", help="read variables from this file instead "
                                                  "of ./.env (the shell's own values still win)"),
          no_env_file: bool = typer.Option(False, "--no-env-file", help="read no .env file at all")) -> None:
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
