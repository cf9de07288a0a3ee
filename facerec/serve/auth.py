"""The API token: where it comes from, when binding is allowed, and how it is checked.

Every ``/api/`` route needs ``Authorization: Bearer <token>``. The token is read from
``FACEREC_API_TOKEN``; without it a random one is generated for this run, which is only
allowed while the server listens on a loopback address (a generated token printed to a
terminal is fine on one's own machine, not on a network).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from facerec.errors import ConfigError

#: Environment variable holding the API token.
TOKEN_ENV = "FACEREC_API_TOKEN"

#: The message of every 401 answer.
UNAUTHORIZED = "missing or wrong API token (send Authorization: Bearer <token>)"

#: Shortest token accepted from the environment (a few characters are guessable).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The token to require, and whether it was generated for this run.

    Args:
        host: the address the server will bind.
        environ: where to look for :data:`TOKEN_ENV` (default: ``os.environ``).

    Raises:
        ConfigError: the token is too short, or there is none and ``host`` is not loopback.
    """
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH}, e.g. "
                "the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return token, False
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an API token: set {TOKEN_ENV} to a long random "
            "secret (python -c 'import secrets; print(secrets.token_urlsafe(32))'), "
            "or bind 127.0.0.1"
        )
    return secrets.token_urlsafe(32), True


_bearer = HTTPBearer(auto_error=False, description=f"The token from {TOKEN_ENV} (or printed at start-up).")


def token_dependency(token: str) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with the right bearer token.

    The comparison takes the same time whatever the token sent (``hmac.compare_digest``),
    so timing does not reveal how much of a guess was right.
    """
    expected = token.encode("utf-8")

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
        sent = credentials.credentials.encode("utf-8") if credentials else b""
        if not credentials or not hmac.compare_digest(sent, expected):
            raise HTTPException(
                401,
                detail=UNAUTHORIZED,
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check



class BearerGuard:
    """ASGI middleware: requests under ``prefix`` need the bearer token.

    It answers ``401`` before the request body is read, so an unauthenticated client
    cannot make the server parse or spool an upload. Everything else passes untouched.

    Args:
        app: the wrapped ASGI application.
        token: the expected token.
        prefix: guarded path prefix.
        exempt: prefixes under ``prefix`` that are checked by a guard of their own (the
            CompreFace API's ``x-api-key``).
    """

    def __init__(self, app: Any, token: str, prefix: str = "/api/", exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.expected = token.encode("utf-8")
        self.prefix = prefix
        self.bare = prefix.rstrip("/")
        self.exempt = exempt

    def allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """True when an ``Authorization: Bearer`` header carries the expected token."""
        for key, value in headers:
            if key.lower() == b"authorization":
                scheme, _, sent = value.strip().partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(sent.strip(), self.expected)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        guarded = (path == self.bare or path.startswith(self.prefix)) and not path.startswith(self.exempt)
        if not guarded or self.allowed(scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": UNAUTHORIZED}).encode("utf-8")
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b"Bearer")],
        })
        await send({"type": "http.response.body", "body": body})
