"""The checks every request passes before any route sees it.

Pure ASGI (not ``BaseHTTPMiddleware``), so streamed answers and client disconnects pass through
untouched. From the outside in:

1. ``HostCheck``: the Host header must name this server (loopback, the listening address, or
   ``allowed_hosts``): a web page that rebinds its own DNS name to 127.0.0.1 still sends its own
   name, and is refused. A request from a web page (an ``Origin`` header) is refused unless its
   origin is listed in ``cors_origins``: without that, a page could still make the model work
   through requests whose answers the browser hides from it.
2. Starlette's ``CORSMiddleware``, only when ``cors_origins`` lists origins, with exactly those.
3. ``RequestGuard``: the API key (when set), the body limit, and the queue limit.

Errors come in the protocol's own shape (``errors.py``), so each official client raises its
matching exception (``AuthenticationError``, ``PermissionDeniedError``, ``RateLimitError``...).
"""

from __future__ import annotations

import hmac
from typing import Optional

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_backend.server.errors import error_response
from mlx_backend.server.settings import LOOPBACK_HOSTS, WILDCARD_HOSTS, ServerSettings

# The routes that queue work on the model; only these count against ``max_queued``.
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses"})


def middleware(settings: ServerSettings) -> list[Middleware]:
    """The host, origin, CORS, key, body and queue checks of ``settings``, outermost first."""
    stack = [Middleware(HostCheck, settings=settings)]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                # The official clients send their own headers (x-stainless-*, anthropic-version...);
                # the listed origins are trusted, so whatever they ask to send is allowed.
                allow_headers=["*"],
            )
        )
    stack.append(Middleware(RequestGuard, settings=settings))
    return stack


def host_name(header: str) -> str:
    """The name in a Host header, without port or brackets, lower-case: ``[::1]:8765`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        name = header[1:end] if end > 0 else header
    elif header.count(":") == 1:
        name = header.split(":", 1)[0]
    else:
        name = header
    return name.rstrip(".")


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: Optional[dict[str, str]] = None) -> None:
    await error_response(scope["path"], status, message, headers=headers)(scope, receive, send)


class HostCheck:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        names = {*LOOPBACK_HOSTS, *(host_name(name) for name in settings.allowed_hosts)}
        if settings.host.strip("[]") not in WILDCARD_HOSTS:
            names.add(host_name(settings.host) if settings.host.count(":") < 2 else settings.host.strip("[]").lower())
        self.names = frozenset(names)
        self.origins = frozenset(origin.rstrip("/") for origin in settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the server speaks no WebSocket protocol
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        name = host_name(headers.get("host", ""))
        # The address the connection arrived at (e.g. the LAN address when listening on 0.0.0.0):
        # a literal address cannot be DNS-rebound.
        arrived_at = (scope.get("server") or ("",))[0]
        if name not in self.names and name != str(arrived_at).lower():
            await _refuse(
                scope, receive, send, 403,
                f"This server does not answer to the name {name or '(none)'!r} in the Host header. "
                "If you mean to reach it by that name, allow it (qwen-desk serve --allow-host NAME, "
                "or the app's server settings).",
            )
            return
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.origins:
            await _refuse(
                scope, receive, send, 403,
                f"Requests from web pages are refused (origin {origin!r}). To let a page you trust "
                "call this server, list its origin (qwen-desk serve --cors-origin URL).",
            )
            return
        await self.app(scope, receive, send)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.api_key = settings.api_key.encode() if settings.api_key else None
        self.max_body = settings.max_body_bytes
        self.max_queued = settings.max_queued
        # Generation requests admitted and not yet answered: the running one plus those waiting.
        # One event loop serves every request, so a plain counter is safe.
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key is not None:
            refusal = self._key_refusal(headers)
            if refusal:
                await _refuse(scope, receive, send, 401, refusal)
                return
        receive_body = await self._limited_body(scope, receive, send, headers)
        if receive_body is None:
            return  # refused (413/400) or the client left while sending
        if scope["method"] != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive_body, send)
            return
        if self.active > self.max_queued:
            await _refuse(
                scope, receive, send, 429,
                f"The server is busy: one request is running and {self.active - 1} are waiting, "
                f"the most it queues. Try again shortly.",
                headers={"retry-after": "1"},
            )
            return
        self.active += 1
        try:
            await self.app(scope, receive_body, send)
        finally:
            self.active -= 1

    def _key_refusal(self, headers: Headers) -> Optional[str]:
        offered = []
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            offered.append(token.strip())
        if headers.get("x-api-key"):
            offered.append(headers["x-api-key"].strip())
        if not offered:
            return "This server needs an API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
        # compare_digest on every offer, so the time taken says nothing about the key.
        if not any([hmac.compare_digest(key.encode(), self.api_key) for key in offered]):
            return "The API key is not the one this server was started with."
        return None

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> Optional[Receive]:
        """``receive`` for the app once the body is known to fit; None when refused."""
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(scope, receive, send, 400, f"Content-Length {length!r} is not a number.")
                return None
            if int(length) > self.max_body:
                await _refuse(scope, receive, send, 413, self._too_large(int(length)))
                return None
            return receive  # the HTTP parser stops the body at Content-Length
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            return receive  # no body
        # A chunked body has no announced size: read it here, counting, then hand it on whole.
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_body:
                await _refuse(scope, receive, send, 413, self._too_large(size, at_least=True))
                return None
            parts.append(part)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]

        async def replay() -> Message:
            # Then the real channel, so the app still hears about a disconnect.
            return pending.pop() if pending else await receive()

        return replay

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return (
            f"The request body is {'at least ' if at_least else ''}{size:,} bytes; "
            f"this server accepts at most {self.max_body:,}."
        )
