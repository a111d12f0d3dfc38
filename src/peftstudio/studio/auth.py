"""Who may talk to the studio.

- Binding anything but a loopback address without a token is refused before the server starts
  (LLaMA-Factory's board listened on 0.0.0.0 with no auth and had a command injection).
- With a token, every page and API call needs it: `Authorization: Bearer T`, or the cookie the
  login page sets. Static files (CSS/JS, no data) are the only exception.
- A token is at least 16 characters (`--token generate` makes one and prints it once), and a
  client that keeps sending wrong ones is made to wait, longer each time (HTTP 429), so a token
  cannot be guessed at network speed.
- Without a token (loopback only), requests must name a loopback host, so a web page on another
  site cannot reach the studio through DNS rebinding; and state-changing requests from another
  origin are refused in both modes (cross-site request forgery).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from urllib.parse import quote, urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from peftstudio.errors import Problem, UserError

COOKIE = "peftstudio_token"
MIN_TOKEN_LENGTH = 16
GENERATE = "generate"
# Wrong tokens a client may send before it must wait; the wait doubles with each further one.
FREE_FAILURES, MAX_WAIT_SECONDS = 5, 300
LOOPBACK_NAMES = ("localhost", "testserver")
OPEN_PATHS = ("/login", "/static/")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    host = host.strip("[]")
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise UserError(Problem(f"--host {host}", "binding a non-loopback address without a token would let anyone "
                                "on the network start jobs on this machine",
                                "add --token SECRET (16+ characters; or set PEFTSTUDIO_STUDIO_TOKEN), --token generate for a random one, "
                                "or keep --host 127.0.0.1"))


def studio_token(token: str | None) -> tuple[str | None, bool]:
    """(the token to serve with, whether it was generated): `--token generate` makes a random
    one; a token shorter than MIN_TOKEN_LENGTH is refused (exit 2)."""
    if not token:
        return None, False  # unset, or set to nothing (PEFTSTUDIO_STUDIO_TOKEN=)
    if token == GENERATE:
        return secrets.token_urlsafe(24), True
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise UserError(Problem("--token", f"{len(token)} characters; a studio token needs at least {MIN_TOKEN_LENGTH}",
                                f"use a longer one, or --token {GENERATE} to have a random one made and printed once"))
    return token, False


class FailedLogins:
    """Wrong tokens per client address: after FREE_FAILURES, each further try must wait
    1, 2, 4, ... seconds (at most MAX_WAIT_SECONDS); a right token clears the count."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        """How long `client` must still wait before its token is even looked at."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
            return max(0.0, until - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            count = self._failures.get(client, (0, 0.0))[0] + 1
            wait = min(2.0 ** (count - FREE_FAILURES - 1), MAX_WAIT_SECONDS) if count > FREE_FAILURES else 0.0
            self._failures[client] = (count, self._clock() + wait)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def too_many_failures(seconds: float) -> JSONResponse:
    return JSONResponse({"detail": f"too many wrong tokens from this address: wait {seconds:.0f} s"}, status_code=429,
                        headers={"Retry-After": str(max(1, round(seconds)))})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def token_matches_text(candidate: str, token: str) -> bool:
    """Constant-time comparison, so response timing does not leak the token."""
    return hmac.compare_digest(candidate.encode(), token.encode())


def token_matches(request: Request, token: str) -> bool:
    sent = request.headers.get("authorization", "")
    candidate = sent[7:] if sent.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
    return token_matches_text(candidate, token)


def safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class AccessMiddleware(BaseHTTPMiddleware):
    """Applies the rules in this module's docstring to every request."""

    def __init__(self, app, token: str | None, failures: FailedLogins | None = None):
        super().__init__(app)
        self.token = token
        self.failures = failures or FailedLogins()

    async def dispatch(self, request: Request, call_next) -> Response:
        refusal = self._refusal(request)
        return refusal if refusal is not None else await call_next(request)

    def _refusal(self, request: Request) -> Response | None:
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        if self.token is None and not (is_loopback(host) or host in LOOPBACK_NAMES):
            return JSONResponse({"detail": f"host {host!r} is not a loopback name"}, status_code=403)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not self._same_origin(request):
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        path = request.url.path
        if self.token is None or path.startswith(OPEN_PATHS):
            return None
        client = client_address(request)
        offered = bool(request.headers.get("authorization") or request.cookies.get(COOKIE))
        if offered and (wait := self.failures.wait_seconds(client)) > 0:
            return too_many_failures(wait)
        if token_matches(request, self.token):
            self.failures.succeeded(client)
            return None
        if offered:
            self.failures.failed(client)
        if path.startswith("/api/"):
            return JSONResponse({"detail": "a token is required: send `Authorization: Bearer TOKEN` or log in"},
                                status_code=401)
        return RedirectResponse(f"/login?next={quote(path)}", status_code=303)

    @staticmethod
    def _same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser cross-site request (browsers send Origin on those)
        return urlsplit(origin).netloc == request.headers.get("host")
