"""Anthropic-compatible routes: ``POST /v1/messages`` (whole or streamed) and its ``count_tokens``.

Point the official ``anthropic`` client (``base_url="http://127.0.0.1:8765"``) or an agent
such as Claude Code (``ANTHROPIC_BASE_URL``) at the server. Requests are translated in
anthropic_messages.py, replies built in anthropic_reply.py. Errors come in Anthropic's shape
with its status codes, so the client raises the matching exception; a request the engine
refuses is answered before any stream starts.

``/v1/messages/count_tokens`` parses the same fields (system, messages, tools, tool_choice,
thinking) and counts the prompt the model would read, rendered by the engine's own renderer:
the number equals the ``input_tokens`` (plus ``cache_read_input_tokens``) of the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mlx_backend.events import ChatRequest, Failed, Finished
from mlx_backend.server.anthropic_messages import AnthropicRequestError, assistant_message, parse_messages_request
from mlx_backend.server.anthropic_reply import ReplyBuilder, StreamEvent, sse
from mlx_backend.server.backend import GenerationBackend, Rejected, TokenCount
from mlx_backend.server.errors import error_body, error_response
from mlx_backend.server.streams import CLIENT_GONE, count_events, finish_in_background, first_event, request_events

if TYPE_CHECKING:
    from mlx_backend.server.app import ServerContext

MESSAGES_PATH = "/v1/messages"

# How often a non-streamed request checks that its client is still there.
DISCONNECT_POLL_S = 0.25


def anthropic_error(status: int, message: str) -> JSONResponse:
    return error_response(MESSAGES_PATH, status, message)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return error_body(MESSAGES_PATH, status, message)


class _GenerationFailed(Exception):
    pass


class _Handle:
    """The backend, keeping the request's cancel function: a matched stop sequence cancels the
    generation yet still waits for its Finished (and the token counts in it)."""

    def __init__(self, backend: GenerationBackend) -> None:
        self._backend = backend
        self.cancel = lambda: None

    def served_model(self):
        return self._backend.served_model()

    def submit(self, request: ChatRequest, sink, *, client: str = ""):
        self.cancel = self._backend.submit(request, sink, client=client)
        return self.cancel


def routes(context: "ServerContext") -> list[Route]:
    async def parsed(request: Request, counting: bool = False):
        """(served model, MessagesCall), or the error response to answer with."""
        served = context.backend.served_model()
        if served is None:
            return anthropic_error(503, "No model is loaded in Qwen Desk: load one, then retry.")
        try:
            body = await request.json()
        except ValueError:
            return anthropic_error(400, "The request body is not valid JSON.")
        if counting and isinstance(body, dict):
            # count_tokens has no max_tokens nor stream; the rest is /v1/messages' own.
            body = {**body, "max_tokens": 1, "stream": False}
        info = served.info
        try:
            return served, parse_messages_request(
                body,
                max_tokens_limit=context.settings.max_tokens_limit,
                thinking_mode=getattr(info, "thinking_mode", "hybrid"),
                thinks_by_default=getattr(info, "thinks_by_default", True),
                model_type=getattr(info, "model_type", ""),
                reasoning_efforts=getattr(info, "reasoning_efforts", ()),
            )
        except AnthropicRequestError as error:
            return anthropic_error(400, str(error))

    async def messages(request: Request) -> Response:
        result = await parsed(request)
        if isinstance(result, Response):
            return result
        served, call = result

        conversation = context.conversations.conversation_for(call.request.messages, client_key=call.client_key, salt=call.salt)
        chat = dataclasses.replace(call.request, conversation_id=conversation)
        handle = _Handle(context.backend)
        events = request_events(handle, chat, client=_client_name(request))
        # Wait for the first event: a refused request gets an HTTP error, not a broken stream.
        first = await first_event(events, request.is_disconnected)
        if first is CLIENT_GONE:
            return Response(status_code=499)  # left while queued: the job was dropped, nobody reads this
        if first is None:
            return anthropic_error(503, "The server is shutting down.")
        if isinstance(first, (Rejected, Failed)):
            await events.aclose()
            status = first.status if isinstance(first, Rejected) else 500
            return anthropic_error(status, first.message)

        builder = ReplyBuilder(served.id, call.stop_sequences)

        def remember() -> None:
            finished = builder.finished
            if finished is not None and (finished.reason != "cancelled" or builder.stopped_early):
                reply = assistant_message(builder.blocks)
                context.conversations.remember(conversation, call.request.messages, reply, salt=call.salt)

        if call.stream:
            return StreamingResponse(_stream(first, events, builder, handle, remember), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _whole(request, first, events, builder, handle, remember)

    async def count_tokens(request: Request) -> Response:
        result = await parsed(request, counting=True)
        if isinstance(result, Response):
            return result
        _served, call = result
        events = count_events(context.backend, call.request)
        answer = await first_event(events, request.is_disconnected)
        await events.aclose()
        if answer is CLIENT_GONE:
            return Response(status_code=499)
        if isinstance(answer, TokenCount):
            return JSONResponse({"input_tokens": answer.tokens})
        if isinstance(answer, Rejected):
            return anthropic_error(answer.status, answer.message)
        message = answer.message if isinstance(answer, Failed) else "The server is shutting down."
        return anthropic_error(500 if isinstance(answer, Failed) else 503, message)

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]


async def _reply_events(first: object, events: AsyncIterator[object], builder: ReplyBuilder, handle: _Handle) -> AsyncIterator[list[StreamEvent]]:
    """The builder's stream events for each engine event, up to Finished."""
    cancelled = False
    event: Optional[object] = first
    while event is not None:
        if isinstance(event, Failed):
            raise _GenerationFailed(event.message)
        yield builder.feed(event)
        if builder.stopped_early and not cancelled:
            handle.cancel()  # a few more tokens may come before the engine sees it: ignored
            cancelled = True
        if isinstance(event, Finished):
            return
        event = await anext(events, None)


async def _stream(first, events, builder: ReplyBuilder, handle: _Handle, remember) -> AsyncIterator[bytes]:
    # Starlette cancels this when the client goes away; leaving ``events`` cancels the job.
    try:
        yield sse(*builder.start())
        try:
            async for batch in _reply_events(first, events, builder, handle):
                for name, data in batch:
                    yield sse(name, data)
        except _GenerationFailed as error:
            yield sse("error", _error_body(500, str(error)))
            return
        for name, data in builder.end():
            yield sse(name, data)
        remember()
    finally:
        await _leave(events, builder)


async def _whole(request: Request, first, events, builder: ReplyBuilder, handle: _Handle, remember) -> Response:
    async def collect() -> None:
        async for _batch in _reply_events(first, events, builder, handle):
            pass

    task = asyncio.ensure_future(collect())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()  # unwinds request_events, which cancels the generation
                return Response(status_code=499)  # nobody reads it; uvicorn needs a response
        task.result()
    except _GenerationFailed as error:
        return anthropic_error(500, str(error))
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, _GenerationFailed):
                await task
        await _leave(events, builder)
    remember()
    return JSONResponse(builder.message())


async def _leave(events, builder: ReplyBuilder) -> None:
    """A complete answer lets the job finish (the engine re-encodes the reply for the next
    turn's cache); anything else - a disconnect, a failure, a matched stop - cancels it."""
    if builder.finished is not None and not builder.stopped_early:
        finish_in_background(events)
    else:
        await events.aclose()


def _client_name(request: Request) -> str:
    """What the app shows as the caller: the client's own name from its User-Agent."""
    agent = request.headers.get("user-agent", "").split(" ")[0]
    return f"Anthropic API ({agent})" if agent else "Anthropic API"
