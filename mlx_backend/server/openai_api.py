"""OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

Request bodies become ``ChatRequest``s in ``openai_messages.py``; this module runs them on the
backend and answers in OpenAI's shapes, whole or streamed as server-sent events. A request the
engine refuses (too long, bad settings) is an HTTP error before any work, a streamed one too:
the stream starts only once the backend has accepted the request. A client that goes away
cancels its generation (streaming: Starlette cancels the response; otherwise a watcher polls
for the disconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Optional, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    Failed,
    Finished,
    MalformedToolCall,
    PrefillProgress,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
)
from mlx_backend.server import sse
from mlx_backend.server.backend import Rejected, ServedModel
from mlx_backend.server.errors import error_response, openai_error_body
from mlx_backend.server.openai_messages import (
    OpenAIRequestError,
    Translated,
    chat_request,
    completion_request,
    with_conversation,
)
from mlx_backend.server.streams import CLIENT_GONE, finish_in_background, first_event, request_events
from mlx_backend.tools.tool_calls import CLOSE, OPEN

if TYPE_CHECKING:
    from mlx_backend.server.app import ServerContext

log = logging.getLogger(__name__)

CREATED = int(time.time())
# How often a non-streaming request checks that its client is still there.
DISCONNECT_POLL_S = 0.1
# The SSE comment that carries prefill progress in a stream: ": prefill {json}".
PREFILL_COMMENT = "prefill"


def openai_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> JSONResponse:
    """OpenAI's error shape, which its client turns into the matching exception class."""
    return JSONResponse(openai_error_body(message, kind, code, param), status_code=status)


def _rejected(rejection: Rejected) -> JSONResponse:
    code = rejection.kind if rejection.kind != "invalid_request" else None
    return error_response("/v1/chat/completions", rejection.status, rejection.message, code=code)


class Reply:
    """One answer as its events arrive: each event's chat delta, and the whole at the end."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []
        self.call_json: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.finished: Optional[Finished] = None
        self.failed: Optional[str] = None

    def delta(self, event: object) -> Optional[dict[str, Any]]:
        """The chat delta for ``event`` (None for progress and the end), recording it."""
        if isinstance(event, ThinkingDelta):
            self.reasoning.append(event.text)
            # Both names: DeepSeek's (vLLM, llama.cpp) and OpenRouter's; clients read either.
            return {"reasoning_content": event.text, "reasoning": event.text}
        if isinstance(event, AnswerDelta):
            self.content.append(event.text)
            return {"content": event.text}
        if isinstance(event, ToolCallEvent):
            return self._tool_call(event.call)
        if isinstance(event, Finished):
            self.finished = event
        elif isinstance(event, Failed):
            self.failed = event.message
        return None

    def _tool_call(self, call: object) -> dict[str, Any]:
        if isinstance(call, MalformedToolCall):
            # Not a call the client could run: the model's text, as it wrote it, and why.
            warning = f"A tool call in the answer could not be read, so it is returned as text: {call.error}"
            log.warning(warning)
            self.warnings.append(warning)
            text = f"{OPEN}{call.raw}{CLOSE}"
            self.content.append(text)
            return {"content": text}
        entry = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        self.calls.append(call)
        self.call_json.append(entry)
        return {"tool_calls": [{"index": len(self.call_json) - 1, **entry}]}

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def complete(self) -> bool:
        return self.finished is not None and self.finished.reason in ("stop", "length") and self.failed is None

    def finish_reason(self) -> str:
        reason = self.finished.reason if self.finished else "stop"
        if reason == "stop" and self.calls:
            return "tool_calls"
        return reason if reason in ("stop", "length") else "stop"

    def usage(self) -> Optional[dict[str, Any]]:
        if self.finished is None:
            return None
        stats = self.finished.stats
        return {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.generation_tokens,
            "total_tokens": stats.prompt_tokens + stats.generation_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
        }

    def timings(self) -> Optional[dict[str, Any]]:
        """The engine's own figures (an extra field, as llama.cpp sends ``timings``): a client
        such as the app's remote engine shows them rather than its own network-skewed guess."""
        if self.finished is None:
            return None
        stats = self.finished.stats
        return {name: getattr(stats, name) for name in ("ttft_s", "prompt_tps", "generation_tps", "peak_memory_gb")}

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or (None if self.calls else "")}
        if self.reasoning:
            message["reasoning_content"] = message["reasoning"] = "".join(self.reasoning)
        if self.call_json:
            message["tool_calls"] = self.call_json
        return message

    def as_history(self) -> ChatMessage:
        """This answer as the client will send it back (what conversation keys match on)."""
        return ChatMessage("assistant", self.text, tuple(self.calls))


class _Format:
    """The object shapes of one endpoint (chat or text completion)."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"

    def _head(self, suffix: str = "") -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind + suffix, "created": int(time.time()), "model": self.model}

    def chunk(self, delta: dict[str, Any], finish_reason: Optional[str] = None, warnings: Sequence[str] = ()) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": _completion_text(delta), "logprobs": None, "finish_reason": finish_reason}
        body = {**self._head(".chunk" if self.chat else ""), "choices": [choice]}
        if warnings:
            body["warnings"] = list(warnings)
        return body

    def usage_chunk(self, usage: Optional[dict[str, Any]], timings: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        body = {**self._head(".chunk" if self.chat else ""), "choices": [], "usage": usage}
        if timings:
            body["timings"] = timings
        return body

    def whole(self, reply: Reply) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": reply.message(), "logprobs": None, "finish_reason": reply.finish_reason()}
        else:
            text = "".join(reply.reasoning) + reply.text
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reply.finish_reason()}
        body = {**self._head(), "choices": [choice], "usage": reply.usage()}
        if reply.warnings:
            body["warnings"] = reply.warnings
        return body


def _completion_text(delta: dict[str, Any]) -> str:
    # A text completion has no reasoning channel: whatever the model wrote is the text.
    return delta.get("reasoning_content") or delta.get("content") or ""


async def _next(events: AsyncIterator[object]) -> Optional[object]:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _run(
    http: Request,
    context: "ServerContext",
    served: ServedModel,
    translated: Translated,
    chat: bool,
    on_complete: Callable[[Reply], None] = lambda reply: None,
) -> Response:
    events = request_events(context.backend, translated.request, client=http.client.host if http.client else "")
    first = await first_event(events, http.is_disconnected)
    if first is CLIENT_GONE:
        return Response(status_code=499)  # left while queued: the job was dropped, nobody reads this
    if first is None:
        return openai_error(503, "The server is shutting down.", "server_error")
    if isinstance(first, Rejected):
        await events.aclose()
        return _rejected(first)
    shape = _Format(chat, served.id)
    if translated.stream:
        return StreamingResponse(
            _stream(shape, events, first, translated.include_usage, on_complete),
            media_type=sse.MEDIA_TYPE, headers=sse.HEADERS,
        )
    reply = Reply()
    collected = await _watching_disconnect(http, _collect(events, first, reply), events)
    if not collected:
        return Response(status_code=499)  # nobody reads it; the generation was cancelled
    if reply.failed is not None or reply.finished is None:
        return openai_error(500, reply.failed or "The generation ended without an answer.", "server_error")
    if reply.complete:
        on_complete(reply)
    return JSONResponse(shape.whole(reply))


async def _collect(events: AsyncIterator[object], first: object, reply: Reply) -> None:
    event: Optional[object] = first
    while event is not None:
        reply.delta(event)
        if isinstance(event, Finished):
            finish_in_background(events)
            return
        event = await _next(events)


async def _watching_disconnect(http: Request, work: Awaitable[None], events: AsyncIterator[object]) -> bool:
    """Run ``work``; False (and the request cancelled) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            task.result()
            return True
        if await http.is_disconnected():
            task.cancel()  # raised inside request_events, which cancels the backend's job
            await asyncio.gather(task, return_exceptions=True)
            await events.aclose()
            return False


async def _stream(
    shape: _Format, events: AsyncIterator[object], first: object, include_usage: bool, on_complete: Callable[[Reply], None]
) -> AsyncIterator[bytes]:
    reply = Reply()
    try:
        if shape.chat:
            yield sse.sse_event(shape.chunk({"role": "assistant", "content": ""}))
        event: Optional[object] = first
        while event is not None and not isinstance(event, Finished):
            if isinstance(event, PrefillProgress):
                # A comment line, which every SSE client skips: progress for clients that read
                # it, and bytes on the wire during a long prefill (no idle-read timeout).
                yield sse.sse_comment(PREFILL_COMMENT, {"done": event.done, "total": event.total, "eta_s": event.eta_s})
            warned = len(reply.warnings)
            delta = reply.delta(event)
            if delta:
                yield sse.sse_event(shape.chunk(delta, warnings=reply.warnings[warned:]))
            event = await _next(events)
        if event is not None:
            reply.delta(event)
            finish_in_background(events)
        if reply.failed is not None or reply.finished is None:
            message = reply.failed or "The generation ended without an answer."
            yield sse.sse_event({"error": {"message": message, "type": "server_error", "param": None, "code": None}})
            return
        yield sse.sse_event(shape.chunk({}, reply.finish_reason()))
        if include_usage:
            yield sse.sse_event(shape.usage_chunk(reply.usage(), reply.timings()))
        yield sse.sse_event("[DONE]")
        if reply.complete:
            on_complete(reply)
    finally:
        if reply.finished is None:
            await events.aclose()  # the client left (or we failed): cancel the generation


# EngineInfo fields listed in /v1/models under "qwen_desk" (all plain values).
MODEL_FACTS = (
    "model_type", "context_length", "yarn_context_length", "thinking_mode", "thinks_by_default",
    "reasoning_efforts", "can_preserve_thinking", "preserves_thinking_by_default", "weights_bytes",
    "num_layers", "quantization_bits",
)


def _model_facts(info: Any) -> dict[str, Any]:
    facts = {name: getattr(info, name) for name in MODEL_FACTS if hasattr(info, name)}
    if isinstance(facts.get("reasoning_efforts"), tuple):
        facts["reasoning_efforts"] = list(facts["reasoning_efforts"])
    # vLLM's name for the context window, which some clients already read.
    extra = {"max_model_len": facts["context_length"]} if "context_length" in facts else {}
    return {**extra, "qwen_desk": facts}


def _thinks_by_default(served: ServedModel) -> bool:
    info = served.info
    mode = getattr(info, "thinking_mode", "hybrid")
    return mode == "always" or (mode == "hybrid" and bool(getattr(info, "thinks_by_default", True)))


async def _body(http: Request) -> Any:
    try:
        return json.loads(await http.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OpenAIRequestError(f"The request body is not valid JSON: {error}.") from error


def routes(context: "ServerContext") -> list[Route]:
    def no_model() -> JSONResponse:
        return openai_error(503, "No model is loaded: load one in Qwen Desk (or start qwen-desk serve with a model).", "server_error", "model_not_loaded")

    async def list_models(_request: Request) -> JSONResponse:
        served = context.backend.served_model()
        ids = [served.id, *context.settings.model_aliases] if served else []
        data = [{"id": model_id, "object": "model", "created": CREATED, "owned_by": "qwen-desk"} for model_id in ids]
        if served is not None:
            for entry in data:  # extra fields (OpenAI's clients keep them): what a chat UI shows
                entry.update(_model_facts(served.info))
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(http: Request) -> Response:
        served = context.backend.served_model()
        if served is None:
            return no_model()
        try:
            translated = chat_request(
                await _body(http),
                max_tokens_limit=context.settings.max_tokens_limit,
                thinks_by_default=_thinks_by_default(served),
            )
        except OpenAIRequestError as error:
            return openai_error(400, error.message, param=error.param)
        messages, salt = translated.request.messages, translated.cache_salt
        conversation = context.conversations.conversation_for(messages, client_key=translated.client_key, salt=salt)

        def remember(reply: Reply) -> None:
            context.conversations.remember(conversation, messages, reply.as_history(), salt=salt)

        return await _run(http, context, served, with_conversation(translated, conversation), True, remember)

    async def completions(http: Request) -> Response:
        served = context.backend.served_model()
        if served is None:
            return no_model()
        try:
            translated = completion_request(await _body(http), max_tokens_limit=context.settings.max_tokens_limit)
        except OpenAIRequestError as error:
            return openai_error(400, error.message, param=error.param)
        return await _run(http, context, served, translated, False)

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
