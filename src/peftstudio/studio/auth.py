"""Who may talk to the studio.

- Binding anything but a loopback address without a token is refused before the server starts
  (LLaMA-Factory's board listened on 0.0.0.0 with no auth and had a command injection).
- With a token, every page and API call needs it: `Authorization: Bearer T`, or the cookie the
  login page sets. Static files (CSS/JS, no data) are the only exception.
- Without a token (loopback only), requests must name a loopback host, so a web page on another
  site cannot reach the studio through DNS rebinding; and state-changing requests from another
  origin are refused in both modes (cross-site request forgery).
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import quote, urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from peftstudio.errors import Problem, UserError

COOKIE = "peftstudio_token"
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
                                "add --token SECRET (or set PEFTSTUDIO_STUDIO_TOKEN), or keep --host 127.0.0.1"))


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

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

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
        if self.token is None or path.startswith(OPEN_PATHS) or token_matches(request, self.token):
            return None
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
