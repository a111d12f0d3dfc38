"""The studio's FastAPI app: pages, login, the REST API under /api, and `serve()`.

Pages are static HTML + vendored JS/CSS from `static/` that call only the /api endpoints;
nothing is fetched from the internet (the interactive /docs page would load Swagger from a CDN,
so only the OpenAPI schema itself is served, at /api/openapi.json).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from peftstudio.redact import scrub_tree
from peftstudio.errors import PeftStudioError
from peftstudio.studio import routes_config, routes_data, routes_jobs
from peftstudio.studio.auth import (COOKIE, AccessMiddleware, FailedLogins, check_bind, client_address, safe_next,
                                    too_many_failures, token_matches_text)
from peftstudio.studio.context import Studio, StudioSettings

STATIC = Path(__file__).parent / "static"
STEPS = 7


def create_app(settings: StudioSettings, runner_command=None, run_queue: bool = True) -> FastAPI:
    """The app for `settings`; the job queue runs while the app is served (lifespan)."""
    studio = Studio(settings, runner_command)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if run_queue:
            studio.runner.start()
        try:
            yield
        finally:
            studio.runner.stop()

    app = FastAPI(title="peftstudio studio", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.studio = studio
    app.state.failed_logins = FailedLogins()  # shared by the login form and API bearer tokens
    app.add_middleware(AccessMiddleware, token=settings.token, failures=app.state.failed_logins)
    for router in (routes_config.router, routes_data.router, routes_jobs.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    _add_pages(app, settings)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PeftStudioError)
    async def user_error(_request: Request, error: PeftStudioError) -> JSONResponse:
        return JSONResponse(scrub_tree({"detail": error.render(), "problems": [vars(p) for p in error.problems]}),
                            status_code=400 if error.exit_code == 2 else 409)

    @app.exception_handler(LookupError)
    async def not_found(_request: Request, error: LookupError) -> JSONResponse:
        return JSONResponse({"detail": f"not found: {error}"}, status_code=404)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers={"Cache-Control": "no-store"})


def _add_pages(app: FastAPI, settings: StudioSettings) -> None:
    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/wizard/1", status_code=303)

    @app.get("/wizard/{step}", include_in_schema=False)
    def wizard(step: int) -> FileResponse:
        if not 1 <= step <= STEPS:
            raise HTTPException(404, f"the wizard has steps 1-{STEPS}")
        return _page("wizard.html")

    @app.get("/jobs", include_in_schema=False)
    def jobs() -> FileResponse:
        return _page("jobs.html")

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job(job_id: int) -> FileResponse:
        return _page("job.html")

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return _page("login.html")

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: str = Form(""), next: str = Form("/")):
        if settings.token is None:
            return RedirectResponse(safe_next(next), status_code=303)
        failures, client = app.state.failed_logins, client_address(request)
        if (wait := failures.wait_seconds(client)) > 0:
            return too_many_failures(wait)
        if not token_matches_text(token, settings.token):
            failures.failed(client)
            return HTMLResponse((STATIC / "login.html").read_text(encoding="utf-8").replace(
                "<!--error-->", '<p class="error">Wrong token.</p>'), status_code=401)
        failures.succeeded(client)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
        return response


def hold_data_dir(data_dir: Path):
    """One studio per data dir: two would both start the queued jobs."""
    import fcntl

    from peftstudio.errors import Problem, UserError

    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "studio.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(Problem(f"--data-dir {data_dir}", "another studio is already serving this data dir",
                                "stop it, or pass another --data-dir")) from None
    return handle


def serve(settings: StudioSettings) -> None:
    """Check the bind address, then serve until Ctrl-C; running jobs keep running."""
    import uvicorn

    check_bind(settings.host, settings.token)
    lock = hold_data_dir(Path(settings.data_dir))  # noqa: F841 - held until the process exits
    app = create_app(settings)
    print(f"peftstudio studio on http://{settings.host}:{settings.port}/  (data: {app.state.studio.settings.data_dir})",
          flush=True)
    # asyncio and h11 by name: trackio brings uvicorn's optional uvloop and httptools, which uvicorn
    # would otherwise pick up, changing the studio's event loop and HTTP parser with an install.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", loop="asyncio", http="h11")
