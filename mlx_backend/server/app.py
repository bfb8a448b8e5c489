"""The ASGI app: each protocol's routes over one backend, behind the security checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette

from mlx_backend.server import anthropic_api
from mlx_backend.server import openai_api
from mlx_backend.server.backend import GenerationBackend
from mlx_backend.server.conversations import ConversationKeys
from mlx_backend.server.settings import ServerSettings


@dataclass
class ServerContext:
    """What every route handler shares."""

    backend: GenerationBackend
    settings: ServerSettings
    conversations: ConversationKeys = field(default_factory=ConversationKeys)


def create_app(backend: GenerationBackend, settings: ServerSettings = ServerSettings()) -> Starlette:
    context = ServerContext(backend, settings)
    routes = [*openai_api.routes(context), *anthropic_api.routes(context)]
    app = Starlette(routes=routes)
    app.state.context = context
    return app
