"""peftstudio's command line: parse → call api → print. Nothing else lives here.

The commands live in three modules by what they take (a config, a run directory, another
tool's files); importing them registers them on the one Typer app, in the order `--help` lists
them."""

from __future__ import annotations

import sys

import typer

from peftstudio.cli import config_commands, run_dir_commands, tool_commands  # noqa: F401 - registers the commands
from peftstudio.cli.app import app, errors
from peftstudio.errors import EXIT_OK, EXIT_RUN_FAILED, Interrupted, PeftStudioError
from peftstudio.redact import scrub
from peftstudio.settings import quiet_library_notices, quiet_tokenizer_threads


def main() -> None:
    """Console entry point: user errors become one message and exit 2, never a traceback."""
    debug = "--debug" in sys.argv[1:]
    quiet_tokenizer_threads()
    quiet_library_notices()
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
