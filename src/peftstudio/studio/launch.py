"""`peftstudio studio`: check the address and the web packages, then serve."""

from __future__ import annotations

from pathlib import Path

from peftstudio.errors import EnvironmentProblem, Problem
from peftstudio.units import MIB


def start_studio(host: str, port: int, data_dir: Path, token: str | None, max_upload_mb: int, max_running: int) -> None:
    """Refuse a non-loopback bind without a token (exit 2) before anything is imported or bound."""
    from peftstudio.studio.auth import check_bind, studio_token

    token, generated = studio_token(token)
    check_bind(host, token)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise EnvironmentProblem(Problem("studio", f"the web packages are missing ({error.name})",
                                         "pip install 'peftstudio' with its dependencies (fastapi, uvicorn)")) from None
    from peftstudio.studio.context import StudioSettings
    from peftstudio.studio.server import serve

    if generated:  # shown once, here; never stored or logged
        print(f"studio token (shown once, keep it): {token}", flush=True)
    serve(StudioSettings(host=host, port=port, data_dir=data_dir, token=token,
                         max_upload_bytes=max_upload_mb * MIB, max_running_per_device=max_running))
