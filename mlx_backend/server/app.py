"""The ASGI app: each protocol's routes over one backend, behind the security checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mlx_backend.server import anthropic_api, openai_api, security
from mlx_backend.server.backend import GenerationBackend
from mlx_backend.server.conversations import ConversationKeys
from mlx_backend.server.errors import error_response
from mlx_backend.server.settings import ServerSettings


@dataclass
class ServerContext:
    """What every route handler shares."""

    backend: GenerationBackend
    settings: ServerSettings
    conversations: ConversationKeys = field(default_factory=ConversationKeys)


async def http_error(request: Request, error: Exception) -> Response:
    # Unknown paths and methods answer in the protocol's shape, and with nothing else.
    assert isinstance(error, HTTPException)
    return error_response(request.url.path, error.status_code, str(error.detail), headers=error.headers)


async def server_error(request: Request, _error: Exception) -> Response:
    return error_response(request.url.path, 500, "The server failed to answer this request; its log says why.")


def create_app(backend: GenerationBackend, settings: ServerSettings = ServerSettings()) -> Starlette:
    """The server's ASGI app; raises ``ServerSettingsError`` for settings it must not run with."""
    settings.check()
    context = ServerContext(backend, settings)
    routes = [*openai_api.routes(context), *anthropic_api.routes(context)]
    app = Starlette(
        routes=routes,
        middleware=security.middleware(settings),
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.context = context
    return app
