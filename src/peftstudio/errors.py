"""Typed errors with a fix hint, and the exit codes the CLI maps them to.

A user error is reported as one readable message, never a traceback: it names the key or
file:line, the bad value, and what to do instead. Several problems found at once travel
together in one error so the user fixes them in one round.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_ENVIRONMENT = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input: where, what, and how to fix it."""

    where: str
    message: str
    fix: str = ""

    def render(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


class PeftStudioError(Exception):
    """Base class: carries the exit code the CLI returns."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, problems: list[Problem] | Problem | str, headline: str | None = None):
        if isinstance(problems, str):
            problems = [Problem("error", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.headline = headline
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        headline = self.headline or (f"{count} problems found" if count > 1 else "")
        body = "\n".join(
            f"  {i}. {p.render()}" if count > 1 else p.render() for i, p in enumerate(self.problems, 1)
        )
        return f"{headline}:\n{body}" if headline else body


class UserError(PeftStudioError):
    """The user's input is wrong (config, data, paths): exit 2."""

    exit_code = EXIT_USER_ERROR


class EnvironmentProblem(PeftStudioError):
    """The environment cannot run the request (missing package, no accelerator): exit 3."""

    exit_code = EXIT_ENVIRONMENT


class Interrupted(PeftStudioError):
    """The run was stopped by a signal (SIGINT: exit 130, SIGTERM: exit 143); the message says
    where it stopped and how to resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(Problem("stopped", message))
        self.exit_code = exit_code
