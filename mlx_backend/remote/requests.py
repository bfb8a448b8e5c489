"""A ``ChatRequest`` as the body of an OpenAI ``/v1/chat/completions`` request to our server.

Only what our server reads (``mlx_backend/server/openai_messages.py``): the same request comes
out there as went in here, so a remote answer is the answer a local engine would give.
"""

from __future__ import annotations

import json
from typing import Any

from mlx_backend.errors import RequestError
from mlx_backend.events import ChatMessage, ChatRequest


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The streamed request body for ``request`` (with usage, which carries the stats)."""
    if request.raw_prompt is not None:
        raise RequestError("A remote model takes chat requests only, not a raw text prompt.")
    if request.kv_bits is not None or request.yarn_factor is not None:
        # Server-side settings of the model, not of one request: refuse rather than ignore.
        raise RequestError("KV cache quantization and YaRN can't be set per request on a remote model.")
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
        "max_tokens": request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    kwargs: dict[str, Any] = {}
    if request.enable_thinking is not None:
        kwargs["enable_thinking"] = request.enable_thinking
    if request.preserve_thinking is not None:
        kwargs["preserve_thinking"] = request.preserve_thinking
    if kwargs:
        body["chat_template_kwargs"] = kwargs
    if request.reasoning_effort is not None:
        body["reasoning_effort"] = request.reasoning_effort
    if request.tools:
        body["tools"] = [dict(tool) for tool in request.tools]
    if request.sampling is not None:
        sampling = request.sampling
        body.update(
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            min_p=sampling.min_p, presence_penalty=sampling.presence_penalty,
        )
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.conversation_id:
        # The server keys its prompt cache on this: the next turn reuses this one's prefill.
        body["prompt_cache_key"] = request.conversation_id
    return body


def _message(message: ChatMessage, index: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        entry["tool_calls"] = [
            {
                "id": f"call_{index}_{n}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            }
            for n, call in enumerate(message.tool_calls)
        ]
    return entry
