"""The one error every export check raises."""

from __future__ import annotations

from peftstudio.errors import PeftStudioError, Problem


class ExportCheckFailed(PeftStudioError):
    """A hand-off was written but does not reproduce the trained model: `export` fails (exit 1)
    and says what differs."""

    def __init__(self, message: str):
        super().__init__(Problem("export check", message))
