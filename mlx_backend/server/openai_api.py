"""OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from mlx_backend.server.app import ServerContext

CREATED = int(time.time())


def openai_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    """OpenAI's error shape, which its client turns into the matching exception class."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def routes(context: "ServerContext") -> list[Route]:
    async def list_models(_request: Request) -> JSONResponse:
        served = context.backend.served_model()
        ids = [served.id, *context.settings.model_aliases] if served else []
        data = [{"id": model_id, "object": "model", "created": CREATED, "owned_by": "qwen-desk"} for model_id in ids]
        return JSONResponse({"object": "list", "data": data})

    return [Route("/v1/models", list_models, methods=["GET"])]
